"""`t2i-adapter preprocess`: turn an image into a condition map with a registered preprocessor."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from t2i_adapter.conditions.options import parse_options
from t2i_adapter.errors import T2IAdapterError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "preprocess",
        help="make a condition map (canny, color, sketch, ...) from an image",
        description="Run a condition preprocessor on IMAGE and write the map as a PNG "
        "(the type and options are recorded in the PNG). `--list` shows every type.",
    )
    parser.add_argument("image", nargs="?", metavar="IMAGE", help="input image file")
    parser.add_argument("--type", "-t", dest="cond_type", metavar="T", help="condition type (see --list)")
    parser.add_argument("--out", "-o", metavar="PNG", help="output PNG file (written atomically)")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="preprocessor option, repeatable (e.g. --option low_threshold=50); see --list",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        metavar="N",
        help="refuse input images with more pixels than this (default 64 MP)",
    )
    parser.add_argument("--list", action="store_true", help="list the condition types and their options")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from t2i_adapter.conditions.registry import condition_specs, get_preprocessor, unavailable_modules

    if args.list:
        _print_list(condition_specs(), unavailable_modules())
        return 0
    missing = [
        flag
        for flag, value in (("IMAGE", args.image), ("--type", args.cond_type), ("--out", args.out))
        if not value
    ]
    if missing:
        raise T2IAdapterError(f"preprocess needs {', '.join(missing)} (or --list)")

    from t2i_adapter.io.images import DEFAULT_MAX_PIXELS, load_image
    from t2i_adapter.io.png import save_png

    spec = get_preprocessor(args.cond_type)  # unknown types fail before any file is read
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise T2IAdapterError(f"{out}: the output is written as PNG; give it a .png name")
    options = spec.check_options(parse_options(args.option, what="--option"))  # typed, for the PNG
    image = load_image(args.image, max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS)
    condition = spec(image, **options)
    save_png(
        condition,
        out,
        {"condition_type": spec.name, "source": str(args.image), "options": options},
    )
    print(f"wrote {out} ({spec.name}, {condition.width}x{condition.height}, {spec.channels} channel(s))")
    return 0


def _print_list(specs: list, unavailable: dict[str, str]) -> None:
    width = max((len(spec.name) for spec in specs), default=0)
    for spec in specs:
        weights = ", needs weights" if spec.needs_weights else ""
        print(f"{spec.name:<{width}}  {spec.channels} ch{weights}  {spec.description}")
        options = ", ".join(f"{key}={_show(value)}" for key, value in spec.options.items())
        if options:
            print(f"{'':<{width}}  options: {options}")
        if spec.aliases:
            print(f"{'':<{width}}  also: {', '.join(spec.aliases)}")
    for module, reason in unavailable.items():
        print(f"(unavailable: {module}: {reason})", file=sys.stderr)


def _show(value: Any) -> str:
    import inspect

    return "(required)" if value is inspect.Parameter.empty else repr(value)
