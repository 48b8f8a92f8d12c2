"""`t2i-adapter evaluate`: placeholder until its owner lands it (replace this whole file)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="(not yet available)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from t2i_adapter.errors import T2IAdapterError

    raise T2IAdapterError("'evaluate' is not available yet")
