"""`t2i-adapter`: one command, one subcommand module per job.

Each module in `COMMAND_MODULES` exposes `register(subparsers)`, which adds its parser and sets
`func` to a function taking the parsed arguments and returning an exit status. Errors the user
caused (`T2IAdapterError`) become one line `error: ...` on stderr and exit status 2.

Start-up: a command line that names a subcommand imports that module only (and each module
imports torch, diffusers and the like inside `run`, when the work starts); `t2i-adapter --help`
or an unknown command imports the light `register` halves of all of them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from t2i_adapter.errors import T2IAdapterError
from t2i_adapter.io.atomic import disk_full_error, is_disk_full

# Order is the order `t2i-adapter --help` lists them.
COMMAND_MODULES = [
    "demo",
    "generate",
    "preprocess",
    "convert",
    "train",
    "data",
    "evaluate",
    "serve",
]

EXIT_USER_ERROR = 2


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `command` (a name in `COMMAND_MODULES`) only that subcommand's."""
    parser = argparse.ArgumentParser(
        prog="t2i-adapter",
        description="Controllable text-to-image generation with T2I-Adapters.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in [command] if command in COMMAND_MODULES else COMMAND_MODULES:
        module = importlib.import_module(f"t2i_adapter.interfaces.cli.{name}")
        module.register(subparsers)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("t2i-adapter")
    except PackageNotFoundError:
        return "unknown"


def _command_of(argv: list[str]) -> str | None:
    """The subcommand a command line names (its first word that is not an option), if any."""
    words = [word for word in argv if not word.startswith("-")]
    return words[0] if words else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_of(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return int(args.func(args) or 0)
    except T2IAdapterError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as error:  # a write outside the atomic writers (logs, TensorBoard) on a full disk
        if not is_disk_full(error):
            raise
        print(f"error: {disk_full_error(error.filename or Path.cwd())}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
