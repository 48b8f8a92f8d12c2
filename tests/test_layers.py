"""Imports run one way: down the layers of docs/architecture.md, never up.

Every module's imports of the package (at the top and inside functions, read with `ast`) are
checked against `LAYERS`: a module may import from its own layer and the ones below it. A new
top-level folder or module must be placed in a layer here, or this test fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import t2i_adapter

PACKAGE = "t2i_adapter"
ROOT = Path(t2i_adapter.__file__).parent

# Lowest first. Names are the first part after `t2i_adapter.` (a folder or a top-level module).
LAYERS: list[tuple[str, ...]] = [
    ("errors", "devices", "hub", "demo_weights", "io", "lazy", "logs"),
    ("adapters",),
    ("checkpoints",),
    ("conditions",),
    ("generation",),
    ("evaluation",),
    ("training", "demo"),
    ("interfaces",),
]

# (importing module, imported module) -> why the upward import is right. Keep it empty if you can.
ALLOWED: dict[tuple[str, str], str] = {}

# `t2i_adapter/__init__.py` re-exports the public API lazily (by name, not by import): no layer.
UNLAYERED = {PACKAGE}


def layer_of(module: str) -> int:
    """The index in LAYERS of `t2i_adapter.<part>...`; a KeyError names a module in no layer."""
    part = module.split(".")[1]
    for index, names in enumerate(LAYERS):
        if part in names:
            return index
    raise KeyError(f"{module}: '{part}' is in no layer of tests/test_layers.py (add it to LAYERS)")


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, module) for every import of the package in `source`, wherever it sits."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [
                (node.lineno, alias.name) for alias in node.names if alias.name.startswith(PACKAGE + ".")
            ]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                parts = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(parts + ([node.module] if node.module else []))
            if base == PACKAGE:  # `from t2i_adapter import devices`: each name is a module
                found += [(node.lineno, f"{PACKAGE}.{alias.name}") for alias in node.names]
            elif base.startswith(PACKAGE + "."):
                found.append((node.lineno, base))
    return found


def upward_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """One line per import of a higher layer that ALLOWED does not explain."""
    if module in UNLAYERED:
        return []
    own = layer_of(module)
    problems = []
    for line, target in imported_modules(source, module, is_package):
        if target in UNLAYERED or (module, target) in ALLOWED:
            continue
        if layer_of(target) > own:
            problems.append(f"{module}:{line} imports {target} (layer {layer_of(target)} > {own})")
    return problems


def package_modules() -> list[tuple[str, Path]]:
    modules = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules.append((".".join(parts), path))
    return modules


def test_every_module_is_in_a_layer():
    for module, _ in package_modules():
        if module not in UNLAYERED:
            layer_of(module)


def test_imports_run_down_the_layers():
    problems = []
    for module, path in package_modules():
        problems += upward_imports(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")
    assert not problems, "imports against the layer order:\n" + "\n".join(problems)


def test_allowed_exceptions_are_still_needed():
    """An exception nobody uses any more is a stale excuse: remove it."""
    used = set()
    for module, path in package_modules():
        for _, target in imported_modules(
            path.read_text(encoding="utf-8"), module, path.name == "__init__.py"
        ):
            used.add((module, target))
    assert not set(ALLOWED) - used


# ---------------------------------------------------------------- the checker itself


def test_the_checker_finds_an_upward_import_anywhere():
    source = (
        "from t2i_adapter.errors import T2IAdapterError\n"
        "import t2i_adapter.adapters.kinds\n"
        "def f():\n"
        "    from t2i_adapter.generation.api import generate\n"
        "    import t2i_adapter.interfaces.cli.main\n"
        "    from t2i_adapter import hub, demo\n"
    )
    problems = upward_imports(source, "t2i_adapter.conditions.fake")
    assert [problem.split(" imports ")[1].split(" ")[0] for problem in problems] == [
        "t2i_adapter.generation.api",
        "t2i_adapter.interfaces.cli.main",
        "t2i_adapter.demo",
    ]
    assert problems[0] == "t2i_adapter.conditions.fake:4 imports t2i_adapter.generation.api (layer 4 > 3)"
    relative = "from ..generation import api\nfrom . import registry\n"
    assert upward_imports(relative, "t2i_adapter.conditions.fake") == [
        "t2i_adapter.conditions.fake:1 imports t2i_adapter.generation (layer 4 > 3)"
    ]
    assert upward_imports(source, "t2i_adapter.interfaces.cli.fake") == []


def test_a_module_in_no_layer_is_refused():
    with pytest.raises(KeyError, match="'plugins' is in no layer"):
        upward_imports("import os\n", "t2i_adapter.plugins.fake")
