"""Training benchmark: samples/s and peak memory with `--cache-latents` and without.

"Plain" is the loop that encodes every image with the VAE and every caption with the text
encoder at each step (what diffusers' example training scripts do); "cached" encodes them once
up front and frees the encoders. Both are this package's trainer on the same model and the same
data, each in its own child process (so peak memory is per mode), one after the other.

    python benchmarks/train.py                        # tiny SD components, CPU
    python benchmarks/train.py --full-size            # SD1.5 architecture, random weights, GPU:
                                                      # 512 px, batch 8, bf16, gradient checkpointing
    python benchmarks/train.py --write-docs           # also put the table into docs/benchmarks.md
    python benchmarks/train.py --compile              # + a row: plain with `train --compile`
    python benchmarks/train.py --checkpointing-cost   # plain with gradient checkpointing off and on

Not a test: numbers go to docs/benchmarks.md ("Training").
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tiny_models: components built in code
sys.path.insert(0, str(ROOT / "benchmarks"))

from timing import (  # noqa: E402  (after the path set-up)
    describe_machine,
    logged_seconds,
    median_step_seconds,
    print_result,
    run_child,
    write_docs,
)

SECTION = "## Training"


# ---------------------------------------------------------------------------------------------
# Model and data
# ---------------------------------------------------------------------------------------------


def write_model(folder: Path, full_size: bool) -> Path:
    """A diffusers folder: tiny SD, or SD1.5's architecture with random weights."""
    from diffusers import StableDiffusionPipeline

    if full_size:
        from generate import full_size_components  # the generation benchmark's SD1.5-shaped parts

        components = full_size_components()
        components.pop("adapter")
    else:
        from tiny_models import tiny_sd_components

        components = tiny_sd_components()
    pipeline = StableDiffusionPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipeline.save_pretrained(str(folder))
    return folder


def write_data(folder: Path, count: int, size: int) -> Path:
    """`count` random photos-to-be with grey condition maps (`<stem>.edge.png`) and captions."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:04d}.png")
        Image.fromarray(pixels[:, :, 0]).save(folder / f"{index:04d}.edge.png")
        (folder / f"{index:04d}.txt").write_text(f"a photo of thing number {index} on a table, high quality")
    return folder


# ---------------------------------------------------------------------------------------------
# One mode, in a child process
# ---------------------------------------------------------------------------------------------


def child_mode(args: argparse.Namespace) -> None:
    from t2i_adapter.training import TrainConfig, train

    cached = args.child == "cached"
    config = TrainConfig(
        model=args.model_dir,
        data=args.data_dir,
        output_dir=str(Path(args.work) / args.child),
        cond_type="edge",
        resolution=args.resolution,
        batch_size=args.batch_size,
        max_steps=args.warmup + args.steps,
        lr=1e-5,
        lr_warmup_steps=0,
        checkpoint_every=0,
        log_every=1,
        cache_latents=cached,
        mixed_precision=args.mixed_precision,
        gradient_checkpointing=args.gradient_checkpointing,
        compile=args.compile,
        progress=False,
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    out = train(config)
    total = time.perf_counter() - started
    seconds = logged_seconds(out)
    step_seconds = median_step_seconds(seconds, args.warmup)
    result = {
        "mode": args.label or args.child,
        "samples_per_second": args.batch_size / step_seconds,
        "seconds_before_loop": total - seconds[-1],  # loading, data check, (caching)
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    if torch.cuda.is_available():
        result["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print_result(result)


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def modes(args: argparse.Namespace) -> list[tuple[str, str, list[str]]]:
    """The rows: (label, child mode, extra child flags); the first row is the 1.00x reference."""
    checkpointing = ["--gradient-checkpointing", args.gradient_checkpointing]
    if args.checkpointing_cost:
        return [
            ("plain, checkpointing off", "plain", ["--gradient-checkpointing", "off"]),
            ("plain, checkpointing on", "plain", ["--gradient-checkpointing", "on"]),
        ]
    rows = [("plain", "plain", checkpointing), ("cached", "cached", checkpointing)]
    if args.compile:
        rows.insert(1, ("plain, --compile", "plain", [*checkpointing, "--compile"]))
    return rows


def run_mode(
    mode: tuple[str, str, list[str]], args: argparse.Namespace, model: Path, data: Path, work: Path
) -> dict:
    label, child, extra = mode
    command = [
        sys.executable, __file__, "--child", child, "--label", label, "--model-dir", str(model),
        "--data-dir", str(data), "--work", str(work / label.replace(" ", "_").replace(",", "")),
        "--resolution", str(args.resolution), "--batch-size", str(args.batch_size),
        "--steps", str(args.steps), "--warmup", str(args.warmup), "--mixed-precision", args.mixed_precision,
        *extra,
    ]  # fmt: skip
    return run_child(command, f"{label} run")


def table(results: list[dict], args: argparse.Namespace) -> str:
    gpu = any("peak_gpu_gib" in r for r in results)
    model = "SD1.5 architecture (random weights)" if args.full_size else "tiny SD (tests/tiny_models.py)"
    lines = [
        f"Model: {model}; {args.resolution}x{args.resolution}, batch {args.batch_size}, "
        f"{args.steps} timed steps after {args.warmup} warmup steps, mixed precision {args.mixed_precision}, "
        f"gradient checkpointing {'as in each row' if args.checkpointing_cost else args.gradient_checkpointing}; "
        f"{describe_machine()}; "
        f"torch {torch.__version__}.",
        "",
        "| mode | samples/s | speed-up | set-up before the loop (s) | peak RSS (GiB) |"
        + (" peak GPU (GiB) |" if gpu else ""),
        "|---|---|---|---|---|" + ("---|" if gpu else ""),
    ]
    base = results[0]["samples_per_second"]
    for r in results:
        row = (
            f"| {r['mode']} | {r['samples_per_second']:.2f} | {r['samples_per_second'] / base:.2f}x | "
            f"{r['seconds_before_loop']:.1f} | {r['peak_rss_gib']:.2f} |"
        )
        if gpu:
            row += f" {r['peak_gpu_gib']:.2f} |"
        lines.append(row)
    return "\n".join(lines)


def _intro() -> str:
    return (
        "`python benchmarks/train.py [--full-size]`: this package's trainer on the same model and data, "
        "once encoding every image and caption at each step (plain, as diffusers' example scripts do) "
        "and once with `--cache-latents` (VAE latents and text embeddings computed once, encoders freed). "
        "Each mode runs in its own process; samples/s is batch size / the median step time of the timed "
        "steps (the machine is shared), the caching itself is in the set-up column.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--full-size", action="store_true", help="SD1.5 architecture with random weights (GPU)"
    )
    parser.add_argument("--resolution", type=int, help="pixels (default: 64 tiny, 512 full size)")
    parser.add_argument("--batch-size", type=int, help="samples per step (default: 4 tiny, 8 full size)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--samples", type=int, help="dataset size (default: batch x (steps + warmup))")
    parser.add_argument(
        "--mixed-precision", choices=("no", "fp16", "bf16"), help="default: no tiny, bf16 full"
    )
    parser.add_argument(
        "--gradient-checkpointing",
        choices=("auto", "on", "off"),
        help="default: on for --full-size, else off",
    )
    parser.add_argument("--compile", action="store_true", help="add a row: plain with train --compile")
    parser.add_argument(
        "--checkpointing-cost", action="store_true", help="only plain, gradient checkpointing off and on"
    )
    parser.add_argument("--write-docs", action="store_true", help="write the table into docs/benchmarks.md")
    # child-process arguments (internal)
    parser.add_argument("--child", choices=("plain", "cached"), help=argparse.SUPPRESS)
    parser.add_argument("--label", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_mode(args)
        return
    args.resolution = args.resolution or (512 if args.full_size else 64)
    args.batch_size = args.batch_size or (8 if args.full_size else 4)
    args.mixed_precision = args.mixed_precision or ("bf16" if args.full_size else "no")
    args.gradient_checkpointing = args.gradient_checkpointing or ("on" if args.full_size else "off")
    samples = args.samples or args.batch_size * (args.steps + args.warmup)
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        model = write_model(work / "model", args.full_size)
        data = write_data(work / "data", samples, args.resolution)
        results = [run_mode(mode, args, model, data, work) for mode in modes(args)]
    text = table(results, args)
    print(text)
    if args.write_docs:
        device = "GPU" if torch.cuda.is_available() else "CPU"
        model = "SD1.5 architecture" if args.full_size else "Tiny model"
        label = f"{model}, {device}, {args.resolution} px"
        label += ", gradient checkpointing off vs on" if args.checkpointing_cost else ""
        label += ", --compile" if args.compile and not args.checkpointing_cost else ""
        write_docs(SECTION, label, text, intro=_intro())


if __name__ == "__main__":
    main()
