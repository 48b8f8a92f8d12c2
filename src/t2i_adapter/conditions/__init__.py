"""Condition preprocessors (one registry: PIL image in, PIL condition map out) and tensor conversion.

The tensor helpers are imported on first use so that the registry works without loading torch.
"""

from __future__ import annotations

from t2i_adapter.conditions.registry import (
    ConditionSpec,
    available_conditions,
    condition_specs,
    get_preprocessor,
    preprocess,
    register_condition,
)
from t2i_adapter.lazy import lazy_exports

# The tensor helpers need torch: the registry alone does not.
__getattr__, __dir__, _tensor_names = lazy_exports(
    __name__,
    {
        "condition_to_tensor": "t2i_adapter.conditions.tensor",
        "resize_condition": "t2i_adapter.conditions.tensor",
    },
)

__all__ = [
    "ConditionSpec",
    "available_conditions",
    "condition_specs",
    "get_preprocessor",
    "preprocess",
    "register_condition",
    *_tensor_names,
]
