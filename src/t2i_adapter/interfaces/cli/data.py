"""`t2i-adapter data check PATH`: validate a training dataset before a long run."""

from __future__ import annotations

import argparse
import json

from t2i_adapter.training.config import DATA_FORMATS

EXIT_UNUSABLE = 2


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
    parser.set_defaults(func=run, print_help=parser.print_help)


def run_check(args: argparse.Namespace) -> int:
    from t2i_adapter.training.check import check_dataset, load_tokenizer
    from t2i_adapter.training.data import open_dataset

    source = open_dataset(
        args.path,
        data_format=args.data_format,
        cond_type=args.cond_type,
        image_column=args.image_column,
        condition_column=args.condition_column,
        caption_column=args.caption_column,
    )
    tokenizer = load_tokenizer(args.model) if args.model else None
    report = check_dataset(
        source, tokenizer=tokenizer, resolution=args.resolution, limit=args.limit, progress=not args.json
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    if not report.is_usable or (args.strict and report.problems):
        return EXIT_UNUSABLE
    return 0


def run(args: argparse.Namespace) -> int:
    if args.data_command == "check":
        return run_check(args)
    args.print_help()
    return EXIT_UNUSABLE
