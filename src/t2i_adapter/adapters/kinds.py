"""The adapter kinds this package knows, and how they map onto diffusers' `adapter_type`."""

from __future__ import annotations

from t2i_adapter.errors import UnknownNameError

FULL = "full"
LIGHT = "light"
XL = "xl"
STYLE = "style"
FUSER = "fuser"

ADAPTER_KINDS = (FULL, LIGHT, XL, STYLE, FUSER)
SPATIAL_KINDS = (FULL, LIGHT, XL)

# diffusers' `T2IAdapter(adapter_type=...)` names for the spatial kinds, both ways.
DIFFUSERS_ADAPTER_TYPES = {FULL: "full_adapter", LIGHT: "light_adapter", XL: "full_adapter_xl"}
KIND_OF_DIFFUSERS_TYPE = {value: key for key, value in DIFFUSERS_ADAPTER_TYPES.items()}


def check_kind(kind: str) -> str:
    """Return `kind` if it is one we know, else raise `UnknownNameError` listing the valid ones."""
    if kind not in ADAPTER_KINDS:
        raise UnknownNameError("adapter kind", kind, ADAPTER_KINDS)
    return kind
