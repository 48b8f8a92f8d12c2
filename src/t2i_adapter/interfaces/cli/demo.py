"""`t2i-adapter demo`: the offline demo world.

`t2i-adapter demo [--out DIR]` writes a grid (condition | without adapter | with adapter) made
with the packaged tiny model and adapters, in seconds on a CPU. `t2i-adapter demo train` rebuilds
those weights from nothing (base model, adapters, evaluation).
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the offline demo (a small model and adapters shipped with the package)",
        description=(
            "Write a grid of pictures made with and without the packaged demo adapters "
            "(`demo`), or rebuild all demo weights from nothing (`demo train`)."
        ),
    )
    parser.add_argument(
        "action",
        nargs="?",
        choices=["run", "train"],
        default="run",
        help="run: make the demo grid (default); train: rebuild every demo weight and evaluate it",
    )
    parser.add_argument(
        "--out", default="t2i-adapter-demo", help="output folder (default ./t2i-adapter-demo)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="denoising steps of the demo grid (default 20)"
    )
    parser.add_argument(
        "--install",
        action="store_true",
        help="train: copy the rebuilt weights into the installed package (replacing the shipped ones)",
    )
    parser.add_argument(
        "--eval-scenes", type=int, default=200, help="train: fresh scenes per evaluation (default 200)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "train":
        from t2i_adapter.demo.rebuild import RebuildPlan, rebuild_demo

        weights = rebuild_demo(args.out, RebuildPlan(eval_scenes=args.eval_scenes), install=args.install)
        print(f"weights: {weights}")
        print(f"evaluation: {weights.parent / 'evaluation'}")
        return 0

    import os

    import torch

    from t2i_adapter.demo.demo_run import DEMO_STEPS, run_demo

    if "OMP_NUM_THREADS" not in os.environ:
        # The tiny model gains nothing from a second thread, and on a busy machine two threads
        # spinning on each other's barriers make it many times slower.
        torch.set_num_threads(1)
    result = run_demo(args.out, steps=args.steps or DEMO_STEPS)
    print(result.grid_path)
    return 0
