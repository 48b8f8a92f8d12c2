"""`t2i-adapter generate`: placeholder until its owner lands it (replace this whole file)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("generate", help="(not yet available)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from t2i_adapter.errors import T2IAdapterError

    raise T2IAdapterError("'generate' is not available yet")
