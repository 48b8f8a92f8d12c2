"""Lazy re-exports (PEP 562): a package names its public API without importing it.

A package's `__init__.py` maps each exported name to the module that defines it; the module is
imported on the first access to the name. This keeps `import t2i_adapter` (and the CLI's start-up,
which reads names like the adapter kinds) free of torch, diffusers and gradio. Usage:

    __getattr__, __dir__, __all__ = lazy_exports(__name__, {"load_adapter": "t2i_adapter.checkpoints.load"})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """The package's `__getattr__`, `__dir__` and `__all__` for `exports` (name -> defining module)."""
    table = dict(exports)

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(table[name]), name)

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(table))

    return __getattr__, __dir__, sorted(table)
