"""Adapter checkpoints: read any layout, detect kind and sizes, load, save and convert.

Re-exported lazily (PEP 562), so `checkpoints.layout` (the layout names the CLI lists in its
help) can be read without importing torch and diffusers.
"""

from __future__ import annotations

from t2i_adapter.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "DIFFUSERS": "t2i_adapter.checkpoints.layout",
        "LAYOUTS": "t2i_adapter.checkpoints.layout",
        "ORIGINAL": "t2i_adapter.checkpoints.layout",
        "detect_adapter": "t2i_adapter.checkpoints.detect",
        "detect_kind": "t2i_adapter.checkpoints.detect",
        "detect_layout": "t2i_adapter.checkpoints.detect",
        "load_adapter": "t2i_adapter.checkpoints.load",
        "read_checkpoint": "t2i_adapter.checkpoints.read",
        "convert_adapter": "t2i_adapter.checkpoints.save",
        "original_state_dict": "t2i_adapter.checkpoints.save",
        "save_adapter": "t2i_adapter.checkpoints.save",
    },
)
