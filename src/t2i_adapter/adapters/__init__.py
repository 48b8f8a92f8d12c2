"""The adapter networks: spatial (full, light, XL: diffusers' `T2IAdapter`), style, CoAdapter fuser.

Re-exported lazily (PEP 562), so `adapters.kinds` (the kind names the CLI lists in its help)
can be read without importing torch and diffusers.
"""

from __future__ import annotations

from t2i_adapter.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "ADAPTER_KINDS": "t2i_adapter.adapters.kinds",
        "SPATIAL_KINDS": "t2i_adapter.adapters.kinds",
        "check_kind": "t2i_adapter.adapters.kinds",
        "CONDITION_TASK_IDS": "t2i_adapter.adapters.fuser",
        "CoAdapterFuser": "t2i_adapter.adapters.fuser",
        "SpatialAdapterConfig": "t2i_adapter.adapters.spatial",
        "build_spatial_adapter": "t2i_adapter.adapters.spatial",
        "describe_spatial_adapter": "t2i_adapter.adapters.spatial",
        "StyleAdapter": "t2i_adapter.adapters.style",
        "new_adapter_for_unet": "t2i_adapter.adapters.factory",
        "spatial_config_for_unet": "t2i_adapter.adapters.factory",
        "unet_feature_channels": "t2i_adapter.adapters.factory",
    },
)
