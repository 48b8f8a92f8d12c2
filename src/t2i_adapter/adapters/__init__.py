"""The adapter networks: spatial (full, light, XL: diffusers' `T2IAdapter`), style, CoAdapter fuser."""

from t2i_adapter.adapters.factory import new_adapter_for_unet, spatial_config_for_unet, unet_feature_channels
from t2i_adapter.adapters.fuser import CONDITION_TASK_IDS, CoAdapterFuser
from t2i_adapter.adapters.kinds import ADAPTER_KINDS, SPATIAL_KINDS, check_kind
from t2i_adapter.adapters.spatial import SpatialAdapterConfig, build_spatial_adapter, describe_spatial_adapter
from t2i_adapter.adapters.style import StyleAdapter

__all__ = [
    "ADAPTER_KINDS",
    "CONDITION_TASK_IDS",
    "SPATIAL_KINDS",
    "CoAdapterFuser",
    "SpatialAdapterConfig",
    "StyleAdapter",
    "build_spatial_adapter",
    "check_kind",
    "describe_spatial_adapter",
    "new_adapter_for_unet",
    "spatial_config_for_unet",
    "unet_feature_channels",
]
