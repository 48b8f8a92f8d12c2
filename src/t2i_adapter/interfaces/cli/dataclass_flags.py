"""Command-line flags made from dataclass fields (`TrainConfig`, `GenerationSettings`, `AdapterSpec`).

A field's metadata carries its help text (and optionally `flag`, `metavar`, `choices`), so a flag's
name, type, default and help are written once, on the field. Every flag defaults to None: "not
given", so a config file or a PNG's record can sit between the dataclass defaults and the flags.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

_TYPES = {"int": int, "float": float, "str": str}


def flag_of(field: dataclasses.Field) -> str:
    """`--batch-size` for `batch_size`, or the field's own `flag` metadata (`weight` -> `--adapter-weight`)."""
    return "--" + field.metadata.get("flag", field.name.replace("_", "-"))


def default_of(field: dataclasses.Field) -> Any:
    """The field's default (a fresh one for list and dict fields); MISSING for a required field."""
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def help_of(field: dataclasses.Field, default: Any = None) -> str:
    """The field's help text, with its default when it has one worth showing (not None, "", [], {})."""
    default = default_of(field) if default is None else default
    text = field.metadata.get("help", "")
    if default is dataclasses.MISSING or default in (None, "", [], {}):
        return text
    return f"{text} (default: {default})"


def add_field_flag(
    parser: Any, field: dataclasses.Field, *, flag: str | None = None, **overrides: Any
) -> argparse.Action:
    """Add the flag of `field` (or `flag`, another name for it) to `parser` or an argument group;
    `overrides` go to `add_argument`."""
    kind = str(field.type).split(" ")[0].split("[")[0]
    options: dict[str, Any] = {"dest": field.name, "default": None, "help": help_of(field)}
    if kind == "bool":
        options["action"] = argparse.BooleanOptionalAction
    elif kind == "list":
        options["nargs"] = "+"
        options["metavar"] = field.name.upper().removesuffix("S")
    else:
        options["type"] = _TYPES.get(kind, str)
        options["choices"] = field.metadata.get("choices")
        if "const" in field.metadata:  # the flag alone means this value (`--gradient-checkpointing`: on)
            options.update(nargs="?", const=field.metadata["const"])
    if "metavar" in field.metadata:
        options["metavar"] = field.metadata["metavar"]
    options.update(overrides)
    return parser.add_argument(flag or flag_of(field), **options)
