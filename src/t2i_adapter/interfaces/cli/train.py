"""`t2i-adapter train`: placeholder until its owner lands it (replace this whole file)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="(not yet available)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from t2i_adapter.errors import T2IAdapterError

    raise T2IAdapterError("'train' is not available yet")
