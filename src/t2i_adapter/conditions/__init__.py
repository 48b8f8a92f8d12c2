"""Condition preprocessors (one registry: PIL image in, PIL condition map out) and tensor conversion.

The tensor helpers are imported on first use so that the registry works without loading torch.
"""

from __future__ import annotations

from typing import Any

from t2i_adapter.conditions.registry import (
    ConditionSpec,
    available_conditions,
    condition_specs,
    get_preprocessor,
    preprocess,
    register_condition,
)

__all__ = [
    "ConditionSpec",
    "available_conditions",
    "condition_specs",
    "condition_to_tensor",
    "get_preprocessor",
    "preprocess",
    "register_condition",
    "resize_condition",
]


def __getattr__(name: str) -> Any:
    if name in ("condition_to_tensor", "resize_condition"):
        from t2i_adapter.conditions import tensor  # needs torch: the registry alone does not

        return getattr(tensor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
