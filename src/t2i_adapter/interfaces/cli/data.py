"""`t2i-adapter data check PATH`: validate a training dataset before a long run.
`t2i-adapter data prepare SRC --out DIR`: compute its conditions (and latents) once, into shards;
on several GPUs or machines: `accelerate launch -m t2i_adapter.interfaces.cli.main data prepare ...`.
"""

from __future__ import annotations

import argparse
import json

from t2i_adapter.conditions.options import parse_options
from t2i_adapter.training.config import DATA_FORMATS

EXIT_UNUSABLE = 2
SKIPPED_SHOWN = 20  # skipped samples printed one per line; report.txt has them all


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="inspect training datasets")
    commands = parser.add_subparsers(dest="data_command", metavar="ACTION")
    check = commands.add_parser(
        "check",
        help="validate a dataset: counts, missing/corrupt files, sizes, long captions, mismatches",
        description="Read every sample once and report what would go wrong in training. Exit status 2 "
        "when no sample is usable (or, with --strict, when any sample has a problem).",
    )
    check.add_argument(
        "path", help="meta file, folder, JSONL manifest, .tar shards, datasets folder or hf:<name>"
    )
    check.add_argument("--cond-type", help="condition name (<stem>.<cond-type>.png files, or a preprocessor)")
    check.add_argument(
        "--format", dest="data_format", default="auto", choices=DATA_FORMATS, help="dataset format"
    )
    check.add_argument("--model", help="base model whose tokenizer counts caption tokens (else not counted)")
    check.add_argument(
        "--resolution", type=int, default=512, help="training size: counts images smaller than it"
    )
    check.add_argument(
        "--limit", type=int, help="check only the first N samples (useful for large shard sets)"
    )
    check.add_argument("--strict", action="store_true", help="exit 2 when any sample has a problem")
    check.add_argument("--json", action="store_true", help="print the findings as JSON")
    check.add_argument("--image-column", default="image", help="datasets: image column")
    check.add_argument("--condition-column", default="conditioning_image", help="datasets: condition column")
    check.add_argument("--caption-column", default="text", help="datasets: caption column")
    _register_prepare(commands)
    parser.set_defaults(func=run, print_help=parser.print_help)


def _register_prepare(commands: argparse._SubParsersAction) -> None:
    prepare = commands.add_parser(
        "prepare",
        help="compute conditions (and with --model, latents) once and write WebDataset shards",
        description="Read a dataset in any training format, make each image's condition map (from the "
        "dataset, or with the preprocessor --cond-type names) and write WebDataset shards of image, "
        "cond.png, txt and json; with --model also the VAE posterior and text embeddings, so training "
        "with --cache-latents reads them. Several processes (accelerate launch) split the shards and "
        "write the same ones. Killed? Run again with --resume.",
    )
    prepare.add_argument(
        "source", help="meta file, folder, JSONL manifest, .tar shards, datasets folder or hf:<name>"
    )
    prepare.add_argument(
        "--out", required=True, metavar="DIR", help="folder for the shards (new, or --resume)"
    )
    prepare.add_argument(
        "--format", dest="data_format", default="auto", choices=DATA_FORMATS, help="dataset format"
    )
    prepare.add_argument(
        "--cond-type", help="condition name: the dataset's <stem>.<cond-type> maps, or a preprocessor to run"
    )
    prepare.add_argument(
        "--cond-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="preprocessor option, repeatable (e.g. detect_resolution=384); see 't2i-adapter preprocess --list'",
    )
    prepare.add_argument(
        "--cond-model",
        metavar="PATH_OR_ID",
        help="the preprocessor's model; short for --cond-option model=...",
    )
    prepare.add_argument(
        "--model", help="base model: also store VAE latents and text embeddings (for --cache-latents)"
    )
    prepare.add_argument(
        "--vae",
        metavar="PATH_OR_HUB_ID",
        help="with --model: another VAE instead of the model's for the latents (train with the same --vae)",
    )
    prepare.add_argument("--resolution", type=int, default=512, help="latents' training size (with --model)")
    prepare.add_argument(
        "--dtype", default="float32", choices=("float32", "float16", "bfloat16"), help="encoders' dtype"
    )
    prepare.add_argument("--batch-size", type=int, default=8, help="images per preprocessor/encoder batch")
    prepare.add_argument(
        "--samples-per-shard",
        type=int,
        default=1000,
        help="samples per output shard (WebDataset input: one output shard per input shard)",
    )
    prepare.add_argument("--resume", action="store_true", help="continue a killed run in the same --out")
    prepare.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    prepare.add_argument("--image-column", default="image", help="datasets: image column")
    prepare.add_argument(
        "--condition-column", default="conditioning_image", help="datasets: condition column"
    )
    prepare.add_argument("--caption-column", default="text", help="datasets: caption column")


def run_check(args: argparse.Namespace) -> int:
    from t2i_adapter.training.check import check_dataset, load_tokenizer
    from t2i_adapter.training.data import open_dataset_with

    source = open_dataset_with(args.path, args)
    tokenizer = load_tokenizer(args.model) if args.model else None
    report = check_dataset(
        source, tokenizer=tokenizer, resolution=args.resolution, limit=args.limit, progress=not args.json
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary(strict=args.strict))
    if not report.is_usable or (args.strict and report.problems):
        return EXIT_UNUSABLE
    return 0


def _condition_options(args: argparse.Namespace) -> dict[str, str]:
    """`--cond-option KEY=VALUE` pairs (and `--cond-model`) as text; the preprocessor converts them."""
    options = parse_options(args.cond_option, what="--cond-option")
    if args.cond_model:
        options["model"] = args.cond_model
    return options


def run_prepare(args: argparse.Namespace) -> int:
    import logging
    import sys

    from t2i_adapter.training.distributed import process_state
    from t2i_adapter.training.prepare import PrepareSettings, prepare_dataset

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    settings = PrepareSettings(
        source=args.source,
        out=args.out,
        data_format=args.data_format,
        cond_type=args.cond_type,
        cond_options=_condition_options(args),
        model=args.model,
        vae=args.vae,
        resolution=args.resolution,
        dtype=args.dtype,
        batch_size=args.batch_size,
        samples_per_shard=args.samples_per_shard,
        image_column=args.image_column,
        condition_column=args.condition_column,
        caption_column=args.caption_column,
        resume=args.resume,
        progress=args.progress,
    )
    summary = prepare_dataset(settings)
    if process_state().is_main_process:
        for where, reason in summary.skipped[:SKIPPED_SHOWN]:
            print(f"skipped: {where}: {reason}", file=sys.stderr)
        more = len(summary.skipped) - SKIPPED_SHOWN
        if more > 0:
            print(f"skipped: ... and {more} more", file=sys.stderr)
        print(
            f"prepared {summary.samples} samples into {len(summary.shards)} shards in {summary.out}"
            + (
                f"; {len(summary.skipped)} skipped (listed in {summary.out / 'report.txt'})"
                if summary.skipped
                else ""
            )
        )
    return 0


def run(args: argparse.Namespace) -> int:
    if args.data_command == "check":
        return run_check(args)
    if args.data_command == "prepare":
        return run_prepare(args)
    args.print_help()
    return EXIT_UNUSABLE
