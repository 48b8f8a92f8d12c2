"""`t2i-adapter evaluate`: how faithfully does a model follow its adapter's condition?

Generates each sample with and without the adapter(s), re-extracts the condition from the
pictures and prints a table of object mask IoU, edge F1 and colour accuracy; writes a Markdown
report, a grid image and the per-sample scores to `--out`.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score how well generated images follow the adapter's condition (with vs without)",
        description=(
            "Generate from conditions with and without the adapter(s), re-extract the condition from "
            "each picture and score agreement. Example: t2i-adapter evaluate --model demo "
            "--adapter demo:sketch --cond-type sketch --num 200"
        ),
    )
    parser.add_argument(
        "--model", required=True, help="base model: 'demo', a hub id, a diffusers folder or a file"
    )
    parser.add_argument(
        "--adapter",
        action="append",
        required=True,
        help="adapter to evaluate (repeat to compose several, each with its own --cond-type)",
    )
    parser.add_argument(
        "--cond-type",
        action="append",
        required=True,
        help="condition type of each adapter: sketch, depth, color or seg (synthetic scenes), or the "
        "<stem>.<cond-type>.png tag of the --data files",
    )
    parser.add_argument("--num", type=int, default=200, help="number of samples (default 200)")
    parser.add_argument(
        "--data",
        default=None,
        help="folder of <stem>.<cond-type>.png + <stem>.txt pairs (default: fresh shapes-world scenes)",
    )
    parser.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    parser.add_argument(
        "--guidance-scale", type=float, default=7.5, help="classifier-free guidance (default 7.5)"
    )
    parser.add_argument("--weight", type=float, default=1.0, help="adapter weight (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first sample; sample i uses seed+i")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: a GPU when there is one)")
    parser.add_argument("--out", default="evaluation", help="folder for report.md, grid.png, scores.json")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from t2i_adapter.demo.evaluate import EvalConfig, run_evaluation

    config = EvalConfig(
        model=args.model,
        adapters=list(args.adapter),
        cond_types=list(args.cond_type),
        num=args.num,
        data=args.data,
        steps=args.steps,
        guidance_scale=args.guidance_scale,
        weight=args.weight,
        seed=args.seed,
        device=args.device,
        out_dir=args.out,
    )

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty() or done == total or done % 50 == 0:
            print(
                f"\revaluated {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True
            )

    report = run_evaluation(config, progress=progress)
    print(report.table())
    print(f"report: {report.report_path}")
    print(f"grid: {report.grid_path}")
    return 0
