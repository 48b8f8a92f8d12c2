"""`data prepare` benchmark: images/s with a model preprocessor (one process against two), and training
samples/s from prepared shards against conditions computed on the fly.

    python benchmarks/prepare.py                 # tiny DPT depth model + tiny SD, CPU
    python benchmarks/prepare.py --full-size     # DPT-Large-sized depth model (random weights),
                                                 # 512 px photos, 2 GPUs when there are 2
    python benchmarks/prepare.py --write-docs    # also put the tables into docs/benchmarks.md

Prepare: the whole run's wall time (reading, depth in batches, PNG encoding, shard writing) after
the depth model is loaded, on `--samples` photos; two processes go through `accelerate launch`,
splitting the threads (CPU) or taking one GPU each. Training: this package's trainer, each mode in
its own process, samples/s = batch / the median step time after the warmup steps (as
`benchmarks/train.py`). Not a test: numbers go to docs/benchmarks.md ("Data preparation").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tiny_models: models built in code
sys.path.insert(0, str(ROOT / "benchmarks"))

from timing import (  # noqa: E402  (after the path set-up)
    describe_machine,
    logged_seconds,
    median_step_seconds,
    print_result,
    run_child,
    write_docs,
)

SECTION = "## Data preparation"


# ---------------------------------------------------------------------------------------------
# Models and data
# ---------------------------------------------------------------------------------------------


def write_data(folder: Path, count: int, size: int) -> Path:
    """`count` smooth random photos (so depth and PNG sizes are realistic) with captions."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        photo = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
        photo.save(folder / f"{index:05d}.png")
        (folder / f"{index:05d}.txt").write_text(f"a photo of thing number {index} on a table")
    return folder


def write_models(folder: Path, full_size: bool) -> tuple[Path, Path]:
    """(depth model, base model) folders."""
    from tiny_models import save_tiny_dpt, save_tiny_sd

    depth = save_tiny_dpt(folder / "depth", full_size=full_size)
    if full_size:
        from train import write_model  # SD1.5's architecture with random weights

        base = write_model(folder / "base", full_size=True)
    else:
        base = save_tiny_sd(folder / "base")
    return depth, base


# ---------------------------------------------------------------------------------------------
# Children: one prepare run, or one training run
# ---------------------------------------------------------------------------------------------


def child_prepare(args: argparse.Namespace) -> None:
    from t2i_adapter.conditions.registry import preprocess
    from t2i_adapter.training.distributed import process_state
    from t2i_adapter.training.prepare import PrepareSettings, prepare_dataset

    state = process_state()
    preprocess("depth", Image.new("RGB", (64, 64)), model=args.depth, device=str(state.device))  # load it
    settings = PrepareSettings(
        args.data,
        args.out,
        cond_type="depth",
        cond_options={"model": args.depth},
        model=args.base if args.with_latents else None,
        resolution=args.resolution,
        batch_size=args.batch_size,
        samples_per_shard=args.samples_per_shard,
        progress=False,
    )
    state.wait_for_everyone()
    started = time.perf_counter()
    summary = prepare_dataset(settings)
    elapsed = time.perf_counter() - started
    if state.is_main_process:
        print_result({"images_per_second": summary.samples / elapsed, "seconds": elapsed})


def child_train(args: argparse.Namespace) -> None:
    from t2i_adapter.training import TrainConfig, train

    config = TrainConfig(
        model=args.base,
        data=args.data,
        output_dir=args.out,
        cond_type="depth",
        cond_options=[f"model={args.depth}"] if args.mode == "on the fly" else [],
        resolution=args.resolution,
        batch_size=args.batch_size,
        max_steps=args.warmup + args.steps,
        lr=1e-5,
        lr_warmup_steps=0,
        checkpoint_every=0,
        log_every=1,
        cache_latents=args.mode == "prepared + cached latents",
        progress=False,
    )
    step_seconds = median_step_seconds(logged_seconds(train(config)), args.warmup)
    print_result({"samples_per_second": args.batch_size / step_seconds})


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def prepare_runs(args, data: Path, depth: Path, base: Path, work: Path) -> list[tuple[str, list[str], dict]]:
    """(label, command, environment) of each prepare configuration."""
    cores = os.cpu_count() or 1
    half = max(1, cores // 2)
    common = [
        "--child", "prepare", "--data", str(data), "--depth", str(depth), "--base", str(base),
        "--resolution", str(args.resolution), "--batch-size", str(args.batch_size),
        "--samples-per-shard", str(args.samples_per_shard),
    ]  # fmt: skip
    single = [sys.executable, __file__, *common]
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
        "--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no", __file__, *common,
    ]  # fmt: skip
    threads = {**os.environ, "OMP_NUM_THREADS": str(cores)}
    halved = {**os.environ, "OMP_NUM_THREADS": str(half)}
    runs = [(f"1 process, {cores} threads", [*single, "--out"], threads)]
    if not torch.cuda.is_available():
        runs.append((f"1 process, {half} thread(s)", [*single, "--out"], halved))
    if torch.cuda.device_count() >= 2 or not torch.cuda.is_available():
        each = "" if torch.cuda.is_available() else f", {half} thread(s) each"
        runs.append((f"2 processes{each}", [*launch, "--out"], halved))
    runs.append(
        ("1 process, + VAE latents and text embeddings", [*single, "--with-latents", "--out"], threads)
    )
    return runs


def prepare_rows(args, data: Path, depth: Path, base: Path, work: Path) -> list[dict]:
    """Each configuration `--repeats` times, alternating (the machine is shared): median and best."""
    runs = prepare_runs(args, data, depth, base, work)
    rates: dict[str, list[float]] = {label: [] for label, _, _ in runs}
    for repeat in range(args.repeats):
        for number, (label, command, env) in enumerate(runs):
            out = work / f"prepared-{number}-{repeat}"
            rates[label].append(run_child([*command, str(out)], env=env)["images_per_second"])
    return [
        {"run": label, "images_per_second": statistics.median(values), "best": max(values)}
        for label, values in rates.items()
    ]


def train_rows(args, photos: Path, depth: Path, base: Path, work: Path) -> list[dict]:
    from t2i_adapter.training.prepare import PrepareSettings, prepare_dataset

    prepared = work / "prepared"
    prepare_dataset(
        PrepareSettings(
            str(photos),
            str(prepared),
            cond_type="depth",
            cond_options={"model": str(depth)},
            model=str(base),
            resolution=args.resolution,
            progress=False,
        )
    )
    modes = (("on the fly", photos), ("prepared shards", prepared), ("prepared + cached latents", prepared))
    rates: dict[str, list[float]] = {mode: [] for mode, _ in modes}
    for repeat in range(args.repeats):  # alternating: the machine is shared
        for mode, data in modes:
            command = [
                sys.executable, __file__, "--child", "train", "--mode", mode, "--data", str(data),
                "--depth", str(depth), "--base", str(base),
                "--out", str(work / f"{mode.replace(' ', '-')}-{repeat}"),
                "--resolution", str(args.resolution), "--batch-size", str(args.train_batch_size),
                "--steps", str(args.steps), "--warmup", str(args.warmup),
            ]  # fmt: skip
            rates[mode].append(run_child(command)["samples_per_second"])
    return [
        {"run": mode, "samples_per_second": statistics.median(values), "best": max(values)}
        for mode, values in rates.items()
    ]


def tables(prepare: list[dict], training: list[dict], args) -> str:
    model = "DPT-Large-sized (random weights)" if args.full_size else "tiny DPT (tests/tiny_models.py)"
    base = "SD1.5 architecture (random weights)" if args.full_size else "tiny SD"
    lines = [
        f"Depth model: {model}; {args.samples} photos of {args.photo_size} px, preprocessor batch "
        f"{args.batch_size}; latents at {args.resolution} px with {base}; {describe_machine(gpu_count=True)}; "
        f"torch {torch.__version__}.",
        "",
        f"| prepare run | images/s, median of {args.repeats} | best | speed-up (median) |",
        "|---|---|---|---|",
    ]
    first = prepare[0]["images_per_second"]
    for row in prepare:
        lines.append(
            f"| {row['run']} | {row['images_per_second']:.1f} | {row['best']:.1f} | "
            f"{row['images_per_second'] / first:.2f}x |"
        )
    lines += [
        "",
        f"Training, batch {args.train_batch_size}, {args.resolution} px, {args.steps} timed steps after "
        f"{args.warmup} warmup steps:",
        "",
        f"| training data | samples/s, median of {args.repeats} runs | best | speed-up (median) |",
        "|---|---|---|---|",
    ]
    first = training[0]["samples_per_second"]
    for row in training:
        lines.append(
            f"| {row['run']} | {row['samples_per_second']:.2f} | {row['best']:.2f} | "
            f"{row['samples_per_second'] / first:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--full-size", action="store_true", help="DPT-Large-sized depth model, SD1.5 shapes (GPU)"
    )
    parser.add_argument("--samples", type=int, help="photos (default: 48 tiny, 512 full size)")
    parser.add_argument(
        "--photo-size", type=int, help="photo side in pixels (default: 96 tiny, 512 full size)"
    )
    parser.add_argument("--resolution", type=int, help="training / latents size (default: 64 tiny, 512 full)")
    parser.add_argument("--batch-size", type=int, default=8, help="preprocessor and encoder batch")
    parser.add_argument("--samples-per-shard", type=int, default=8, help="output shard size")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each configuration (alternating)")
    parser.add_argument("--train-batch-size", type=int, default=4, help="training batch")
    parser.add_argument("--steps", type=int, default=15, help="timed training steps per mode")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps first")
    parser.add_argument("--write-docs", action="store_true", help="write the tables into docs/benchmarks.md")
    # child-process arguments (internal)
    parser.add_argument("--child", choices=("prepare", "train"), help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    for name in ("--data", "--depth", "--base", "--out"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--with-latents", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.resolution = args.resolution or (512 if args.full_size else 64)
    if args.child == "prepare":
        child_prepare(args)
        return
    if args.child == "train":
        child_train(args)
        return
    args.samples = args.samples or (512 if args.full_size else 48)
    args.photo_size = args.photo_size or (512 if args.full_size else 96)
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        depth, base = write_models(work / "models", args.full_size)
        photos = write_data(work / "photos", args.samples, args.photo_size)
        prepare = prepare_rows(args, photos, depth, base, work)
        training = train_rows(args, photos, depth, base, work)
    text = tables(prepare, training, args)
    print(text)
    if args.write_docs:
        device = "GPU" if torch.cuda.is_available() else "CPU"
        write_docs(SECTION, f"{'DPT-Large-sized' if args.full_size else 'Tiny'} depth model, {device}", text)


if __name__ == "__main__":
    main()
