"""LoRAs: seconds per generation with no LoRA, with LoRAs unfused (eager) and fused (compiled path).

Three pipelines, each on its own copy of one model (tiny SD, or `--full-size`: SD1.5's architecture
with random weights), run alternately in one process (`--repeats` rounds after a warm-up round,
the same prompt, condition and seed), so a busy machine slows them alike:

- no LoRA: the eager pipeline on a UNet that never had a LoRA;
- unfused: the eager pipeline with 2 kohya LoRAs (rank 4, UNet and text encoder, made in code as
  tests/test_loras.py's `kohya_lora` makes them) active through peft's layers, as `generate` runs them;
- fused: the compiled path (`T2IAdapterPipeline._denoiser`: `FusedLoras.sync`, the peft layers
  swapped for their base layers) with the same LoRAs, but the "compiled" UNet is the eager module
  itself (`CompiledUNet` built with `torch.compile` stubbed to the identity): no compile, so it
  runs in seconds on a CPU, and no CUDA-only preparation (channels-last, fused QKV), so the rows
  differ by the LoRAs alone. The text encoder runs its LoRAs unfused in both LoRA rows.

Timed: one whole `T2IAdapterPipeline` call (prompt encoding, adapter, `--steps` DDIM steps with
classifier-free guidance: batch 2 per UNet call, VAE decode), wall clock and process CPU time,
median per row; the extra milliseconds per UNet step over "no LoRA" are (row - no LoRA) / steps.
A LoRA switch: on the fused pipeline, `apply_loras` to the other set (its `set_adapters`) and
`FusedLoras.sync` (re-fuse), there and back each round; the eager switch (`apply_loras` alone,
the unfused layers read the scales at run time) beside it.

    python benchmarks/loras.py --threads 1              # tiny SD, CPU, 64 px, 10 steps
    python benchmarks/loras.py --full-size --device cuda --dtype float16 --size 512 --steps 4

Not a test: numbers go to docs/benchmarks.md ("LoRAs: fused vs unfused").
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers.utils import logging as diffusers_logging
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # timing: synchronize, describe_machine
sys.path.insert(0, str(ROOT.parent / "tests"))  # tiny_models, test_loras: models and LoRAs built in code

from generate import full_size_components, tiny_components  # noqa: E402
from timing import describe_machine, synchronize  # noqa: E402

from t2i_adapter.devices import resolve_device  # noqa: E402
from t2i_adapter.errors import T2IAdapterError  # noqa: E402
from t2i_adapter.generation import compiling  # noqa: E402
from t2i_adapter.generation.api import TORCH_DTYPES  # noqa: E402
from t2i_adapter.generation.base_model import BaseModel  # noqa: E402
from t2i_adapter.generation.lora_fusion import FusedLoras  # noqa: E402
from t2i_adapter.generation.loras import LoraSpec, apply_loras  # noqa: E402
from t2i_adapter.generation.pipeline import T2IAdapterPipeline  # noqa: E402
from t2i_adapter.generation.units import AdapterUnit  # noqa: E402
from test_loras import kohya_lora  # noqa: E402

PROMPT = "a photo of a red cat"
ROWS = ("no LoRA", "LoRAs unfused (eager, peft layers)", "LoRAs fused (compiled path, no compile)")


@contextlib.contextmanager
def identity_compile():
    """`torch.compile` returns its module unchanged while this is open."""
    real = compiling.torch.compile
    compiling.torch.compile = lambda module, **options: module
    try:
        yield
    finally:
        compiling.torch.compile = real


def build(args: argparse.Namespace, folder: Path) -> dict:
    """The three pipelines, the adapter unit and the two LoRA sets (a, b) the switch alternates."""
    device, dtype = resolve_device(args.device), TORCH_DTYPES[args.dtype]
    with torch.device(device) if args.full_size else contextlib.nullcontext():
        components = full_size_components() if args.full_size else tiny_components(sdxl=False)
    adapter = components.pop("adapter").to(device=device, dtype=dtype)
    bases = [BaseModel(**copy.deepcopy(components), name="bench") for _ in ROWS]
    for base in bases:
        base.to(device=device, dtype=dtype)
        for module in base.frozen_modules():
            module.requires_grad_(False)
    files = []
    for seed in (1, 2):
        files.append(folder / f"lora{seed}.safetensors")
        save_file(kohya_lora(bases[0], seed), str(files[-1]))
    sets = ([LoraSpec(str(files[0]), 0.8), LoraSpec(str(files[1]), 0.5)], [LoraSpec(str(files[0]), 0.3)])
    pipes = [T2IAdapterPipeline(base) for base in bases]
    with identity_compile():
        pipes[2].compiled_unet = compiling.CompiledUNet(bases[2].unet, device)
    for pipe in pipes[1:]:
        apply_loras(pipe, sets[0])
    condition = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    unit = AdapterUnit(adapter, condition.to(device=device, dtype=dtype))
    return {"pipes": dict(zip(ROWS, pipes, strict=True)), "unit": unit, "sets": sets}


def timed(work: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of `work()`, the GPU's queue included."""
    synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(args: argparse.Namespace, bench: dict) -> dict[str, list[tuple[float, float]]]:
    fused_pipe, eager_pipe = bench["pipes"][ROWS[2]], bench["pipes"][ROWS[1]]
    first, other = bench["sets"]

    def generation(pipe: T2IAdapterPipeline) -> Callable[[], object]:
        size = dict(width=args.size, height=args.size)
        return lambda: pipe(PROMPT, [bench["unit"]], steps=args.steps, seed=0, **size, output_type="np")

    def switch(pipe: T2IAdapterPipeline, specs: list[LoraSpec], fuse: bool) -> Callable[[], None]:
        def work() -> None:
            apply_loras(pipe, specs)
            if fuse:
                FusedLoras.of(pipe.base.unet).sync()

        return work

    runs: dict[str, list[tuple[float, float]]] = {}
    for round_index in range(args.repeats + 1):  # round 0 warms up (first calls, the first fusion)
        results = {row: timed(generation(pipe)) for row, pipe in bench["pipes"].items()}
        for label, pipe, fuse in (
            ("switch + re-fuse", fused_pipe, True),
            ("switch, eager", eager_pipe, False),
        ):
            there, back = timed(switch(pipe, other, fuse)), timed(switch(pipe, first, fuse))
            results[label] = there
            results[label + " (back)"] = back
        if round_index:
            for label, result in results.items():
                runs.setdefault(label, []).append(result)
    return runs


def report(args: argparse.Namespace, runs: dict[str, list[tuple[float, float]]]) -> None:
    def median(label: str, index: int) -> float:
        return statistics.median(run[index] for run in runs[label])

    print(
        f"{'full-size SD1.5 (random)' if args.full_size else 'tiny SD'}, {args.size} px, {args.steps} steps"
        f" (UNet batch 2), 2 LoRAs, {args.device}, {args.dtype}, {torch.get_num_threads()} threads,"
        f" median of {args.repeats}, {describe_machine()}, torch {torch.__version__}"
    )
    print(
        "| per generation | s (wall) | CPU s | vs no LoRA (wall) | vs no LoRA (CPU) | + ms / UNet step (CPU) |"
    )
    print("|---|---|---|---|---|---|")
    base_wall, base_cpu = median(ROWS[0], 0), median(ROWS[0], 1)
    for row in ROWS:
        wall, cpu = median(row, 0), median(row, 1)
        extra = 1000 * (cpu - base_cpu) / args.steps
        print(
            f"| {row} | {wall:.3f} | {cpu:.3f} | {wall / base_wall:.2f}x | {cpu / base_cpu:.2f}x | {extra:+.1f} |"
        )
    print()
    print("| LoRA switch (2 LoRAs <-> 1, other scales) | ms (wall) | CPU ms |")
    print("|---|---|---|")
    for label in ("switch + re-fuse", "switch, eager"):
        samples = runs[label] + runs[label + " (back)"]
        wall = statistics.median(w for w, _ in samples)
        cpu = statistics.median(c for _, c in samples)
        print(f"| {label} | {1000 * wall:.1f} | {1000 * cpu:.1f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (cpu)")
    parser.add_argument("--dtype", default="float32", choices=sorted(TORCH_DTYPES))
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds, each row once per round (5)")
    parser.add_argument("--size", type=int, default=64, help="image side (64)")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps per generation (10)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--full-size", action="store_true", help="SD1.5's architecture, random weights (for a GPU)"
    )
    args = parser.parse_args()
    if args.repeats < 1 or args.steps < 1 or args.size < 8 or args.size % 8:
        parser.error("--repeats and --steps must be >= 1, --size a multiple of 8")
    if args.threads:
        torch.set_num_threads(args.threads)
    diffusers_logging.set_verbosity_error()  # "modules that should be kept in float32: []" per copy
    with tempfile.TemporaryDirectory() as folder:
        try:
            bench = build(args, Path(folder))
        except T2IAdapterError as error:
            parser.error(str(error))
        report(args, measure(args, bench))
    return 0


if __name__ == "__main__":
    sys.exit(main())
