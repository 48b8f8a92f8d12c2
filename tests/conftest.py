"""Shared test settings: no network, quiet libraries, deterministic CPU math."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist, each worker gets its share of the cores (2 workers on 2 cores: 1 thread
# each), it and the processes its tests start: OpenMP threads spinning against the other
# worker's made single tests 30x slower (the demo-world evaluate test: 4 s alone, 128 s in the
# suite). Set before torch is imported; a value you set yourself wins.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))
    os.environ.setdefault("MKL_NUM_THREADS", str(_share))


@pytest.fixture
def graphs(monkeypatch):
    """Swap Inductor for a backend that counts the graphs TorchDynamo hands it and runs them as
    traced (no C++): the compiled path's graphs, counted (tests of --compile and LoRA fusion)."""
    import torch

    from t2i_adapter.generation import compiling

    compiled = []

    def counting(graph_module, example_inputs):
        compiled.append(graph_module)
        return graph_module.forward

    torch._dynamo.reset()
    monkeypatch.setattr(compiling, "BACKEND", counting)
    yield compiled
    torch._dynamo.reset()
