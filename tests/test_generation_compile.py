"""`--compile`: same images as eager, one graph per size (idle adapter steps included), compiled
modules kept in the cache, recorded in the PNG but not needed to reproduce it, eager with one
warning line where compile cannot run.

Tracing costs time on 2 cores (TorchDynamo: ~20 s for the tiny UNet; Inductor's C++ code: minutes),
so: the plumbing tests stub `torch.compile` out (`stub_compile`); one test swaps Inductor for a
counting backend (`compiling.BACKEND`: TorchDynamo still traces and guards, so graphs and
recompiles are real); one slow test runs Inductor itself.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from t2i_adapter.generation import compiling
from t2i_adapter.generation.api import generate
from t2i_adapter.generation.batch import read_jobs, run_jobs
from t2i_adapter.generation.cache import ModelCache
from t2i_adapter.generation.pipeline import T2IAdapterPipeline
from t2i_adapter.generation.settings import AdapterSpec, GenerationSettings
from t2i_adapter.generation.units import AdapterUnit
from t2i_adapter.interfaces.cli.main import main
from t2i_adapter.io.png import read_png_parameters
from tiny_models import save_tiny_sd, tiny_adapter, tiny_sd_base_model

# Inductor on the CPU reorders float32 sums (fused kernels, vectorised reductions): a few ulps per
# op, through 2 steps and the VAE. Measured max difference on the tiny model: ~1e-6.
INDUCTOR_TOLERANCE = 1e-4


@pytest.fixture
def stub_compile(monkeypatch):
    """`torch.compile` as the identity: the pipeline's compile path (wrapper, timings, cache, log
    lines) without tracing; returns the options each call got."""
    calls = []

    def identity(module, **options):
        calls.append(options)
        return module

    monkeypatch.setattr(compiling.torch, "compile", identity)
    return calls


@pytest.fixture(scope="module")
def condition():
    return torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))


def sample(pipe, adapter, condition, *, end=1.0, width=64, steps=4):
    output = pipe(
        "a red cat",
        [AdapterUnit(adapter, condition, end=end)],
        steps=steps,
        seed=0,
        width=width,
        height=64,
        output_type="np",
    )
    return output.images, output.timings


@pytest.mark.slow  # TorchDynamo traces the tiny UNet: 10-40 s on 2 shared cores
def test_idle_adapter_steps_reuse_the_graph_and_match_eager(graphs, condition):
    base, adapter = tiny_sd_base_model(), tiny_adapter(seed=1)
    pipe = T2IAdapterPipeline(base)
    eager_full, _ = sample(pipe, adapter, condition, steps=4)
    eager_half, _ = sample(pipe, adapter, condition, end=0.5, steps=4)
    assert pipe.enable_compile() is True
    compiled_full, timings = sample(pipe, adapter, condition, steps=4)
    assert graphs, "the UNet was not compiled"
    first = len(graphs)
    # the adapter acts on the first half only: idle steps get zero residuals, no second graph
    compiled_half, again = sample(pipe, adapter, condition, end=0.5, steps=4)
    late = pipe("a red cat", [AdapterUnit(adapter, condition, start=0.5)], steps=4, width=64, height=64)
    assert len(graphs) == first and timings["compile_seconds"] > 0 and again["compile_seconds"] == 0
    assert late.timings["compile_seconds"] == 0  # idle first steps: zeros from the start too
    assert np.abs(compiled_full - eager_full).max() <= 1e-6
    assert np.abs(compiled_half - eager_half).max() <= 1e-6
    assert np.abs(eager_half - eager_full).max() > 1e-3  # the window changed the image


def test_compile_time_is_reported_once_and_a_new_size_is_said_once(stub_compile, condition, caplog):
    pipe = T2IAdapterPipeline(tiny_sd_base_model())
    adapter = tiny_adapter(seed=1)
    assert pipe.enable_compile() and stub_compile == [{"mode": None, "backend": "inductor"}]
    reports = []
    with caplog.at_level(logging.WARNING, logger="t2i_adapter"):
        pipe(
            "a cat", [AdapterUnit(adapter, condition)], steps=2, width=64, height=64, callback=reports.append
        )
        sample(pipe, adapter, condition, width=96, steps=1)
        _, timings = sample(pipe, adapter, condition, width=96, steps=1)
    # the first step's report carries the first call's (compiling) time; the timings too
    assert reports[0]["compile_seconds"] > 0 and "compile_seconds" not in reports[1]
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["new shape 96x64 (batch 1): recompiling the UNet"]
    assert timings["compile_seconds"] == 0  # the second run at 96x64 reuses its graph


def test_unsupported_compile_runs_eager_after_one_warning_line(monkeypatch, condition, caplog):
    monkeypatch.setattr(compiling, "compile_unsupported", lambda device: "no C++ compiler (test)")
    pipe = T2IAdapterPipeline(tiny_sd_base_model())
    adapter = tiny_adapter(seed=1)
    expected, _ = sample(pipe, adapter, condition, steps=2)
    with caplog.at_level(logging.WARNING, logger="t2i_adapter"):
        assert pipe.enable_compile() is False
        images, timings = sample(pipe, adapter, condition, steps=2)
    assert [r.getMessage() for r in caplog.records] == ["--compile: no C++ compiler (test); running eagerly"]
    assert pipe.compiled_unet is None and "compile_seconds" not in timings
    assert np.array_equal(images, expected)


def test_real_support_probe_names_mps_and_a_missing_compiler(monkeypatch):
    assert compiling.compile_unsupported(torch.device("mps")) == "torch.compile is not supported on MPS"
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    assert "no C++ compiler" in compiling.compile_unsupported(torch.device("cpu"))


# ---------------------------------------------------------------- through generate(), the CLI, batch, serve


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("compile")
    save_tiny_sd(root / "model")
    tiny_adapter(seed=1).save_pretrained(root / "adapter")
    picture = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(picture).rectangle((10, 10, 50, 40), fill=(30, 30, 220), outline="black", width=2)
    picture.save(root / "cond.png")
    return root


def cli_args(files, out, *extra: str) -> list[str]:
    return ["generate", "--model", str(files / "model"), "--prompt", "a blue box",
            "--adapter", str(files / "adapter"), "--cond", str(files / "cond.png"), "--adapter-range", "0:0.5",
            "--steps", "2", "--device", "cpu", "--out", str(out), *extra]  # fmt: skip


def test_compile_is_recorded_in_the_png_and_not_needed_to_reproduce_it(stub_compile, files, tmp_path):
    compiled, eager, back = tmp_path / "compiled.png", tmp_path / "eager.png", tmp_path / "back.png"
    assert main(cli_args(files, compiled, "--compile")) == 0
    assert stub_compile and read_png_parameters(compiled)["compile"] is True
    assert main(["generate", "--from-png", str(compiled), "--no-compile", "--out", str(eager)]) == 0
    assert read_png_parameters(eager)["compile"] is False
    assert main(["generate", "--from-png", str(eager), "--compile", "--out", str(back)]) == 0
    pixels = [np.asarray(Image.open(path), dtype=np.int16) for path in (compiled, eager, back)]
    assert np.abs(pixels[0] - pixels[1]).max() <= 1 and np.abs(pixels[2] - pixels[1]).max() <= 1


def test_the_cache_keeps_the_compiled_pipeline_apart_and_reuses_it(stub_compile, files):
    cache = ModelCache(max_base_models=2)
    spec = AdapterSpec(adapter=str(files / "adapter"), cond=str(files / "cond.png"))
    settings = GenerationSettings(model=str(files / "model"), prompt="a box", adapters=[spec], steps=1)
    settings = settings.replace(device="cpu", compile=True)
    first = generate(settings, cache=cache)
    second = generate(settings, cache=cache)
    eager = generate(settings.replace(compile=False), cache=cache)
    assert first.timings["compile_seconds"] > 0 and second.timings["compile_seconds"] == 0
    assert len(stub_compile) == 1 and "compile_seconds" not in eager.timings
    assert np.array_equal(np.asarray(first.images[0]), np.asarray(eager.images[0]))
    pipelines = list(cache._pipelines.values())
    assert len(pipelines) == 2 and sum(p.compiled_unet is not None for p in pipelines) == 1


def test_batch_jobs_can_ask_for_compile(stub_compile, files, tmp_path):
    line = {"prompt": "a box", "model": str(files / "model"), "compile": True, "steps": 1,
            "adapters": [{"adapter": str(files / "adapter"), "cond": "cond.png"}]}  # fmt: skip
    (files / "jobs.jsonl").write_text(json.dumps(line) + "\n")
    jobs, failures = read_jobs(files / "jobs.jsonl", {"device": "cpu"})
    report = run_jobs(jobs, tmp_path)
    assert failures == [] and report.failures == [] and stub_compile
    assert read_png_parameters(report.written[0])["compile"] is True


# ---------------------------------------------------------------- Inductor itself


@pytest.mark.slow  # Inductor's C++ code generation for the tiny UNet: 1-3 minutes on 2 cores
@pytest.mark.skipif(
    compiling.compile_unsupported(torch.device("cpu")) is not None,
    reason=f"torch.compile cannot run here: {compiling.compile_unsupported(torch.device('cpu'))}",
)
def test_inductor_gives_the_eager_image_within_tolerance(condition):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    pipe = T2IAdapterPipeline(tiny_sd_base_model())
    adapter = tiny_adapter(seed=1)
    expected, _ = sample(pipe, adapter, condition, end=0.5, steps=2)
    assert pipe.enable_compile()
    first, timings = sample(pipe, adapter, condition, end=0.5, steps=2)
    graphs = counters["stats"]["unique_graphs"]
    again, again_timings = sample(pipe, adapter, condition, end=0.5, steps=2)
    assert timings["compile_seconds"] > 0 and again_timings["compile_seconds"] == 0
    assert counters["stats"]["unique_graphs"] == graphs  # adapter-active and idle steps: one graph
    torch._dynamo.reset()
    assert np.abs(first - expected).max() <= INDUCTOR_TOLERANCE
    assert np.array_equal(first, again)
