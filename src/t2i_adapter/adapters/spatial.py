"""Spatial adapters (full, light, XL): diffusers' `T2IAdapter`, described by one typed config.

diffusers' `T2IAdapter` implements the three convolutional layouts of the original release
exactly (same layers, same order), so we build on it instead of keeping a second copy; the
module it returns also plugs straight into diffusers' adapter pipelines. What we add is a typed
config and the attributes the rest of the package reads: `adapter_kind`,
`in_condition_channels` (C of the `(N, C, H, W)` condition) and `feature_channels` (channels of
each returned feature map).
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import T2IAdapter

from t2i_adapter.adapters.kinds import DIFFUSERS_ADAPTER_TYPES, FULL, KIND_OF_DIFFUSERS_TYPE, LIGHT, XL
from t2i_adapter.errors import ModelMismatchError

# The original release's pixel-unshuffle factors: SD1.x/2.x latents are H/8, SDXL adapters start at H/16.
DEFAULT_DOWNSCALE = {FULL: 8, LIGHT: 8, XL: 16}


@dataclass(frozen=True)
class SpatialAdapterConfig:
    """The shape of a spatial adapter, with diffusers' `T2IAdapter` field names and meaning.

    `channels` follows diffusers: for `full` and `xl` one entry per feature map; for `light` one
    entry fewer, because its last level repeats the last channel count (the original 4-level
    colour adapter `[320, 640, 1280, 1280]` is `channels=(320, 640, 1280)` here).
    """

    kind: str
    in_channels: int
    channels: tuple[int, ...]
    num_res_blocks: int
    downscale_factor: int

    @property
    def adapter_type(self) -> str:
        return DIFFUSERS_ADAPTER_TYPES[self.kind]

    @property
    def feature_channels(self) -> tuple[int, ...]:
        """Channels of each feature map the adapter returns, first level first."""
        if self.kind == LIGHT:
            return (*self.channels, self.channels[-1])
        return self.channels

    def to_diffusers(self) -> dict:
        return {
            "in_channels": self.in_channels,
            "channels": list(self.channels),
            "num_res_blocks": self.num_res_blocks,
            "downscale_factor": self.downscale_factor,
            "adapter_type": self.adapter_type,
        }

    @classmethod
    def from_diffusers(cls, config: dict) -> SpatialAdapterConfig:
        """Read a diffusers `T2IAdapter` config (a `config.json` dict or `adapter.config`)."""
        adapter_type = config.get("adapter_type", "full_adapter")
        if adapter_type not in KIND_OF_DIFFUSERS_TYPE:
            raise ModelMismatchError(f"unsupported diffusers adapter_type '{adapter_type}'")
        kind = KIND_OF_DIFFUSERS_TYPE[adapter_type]
        return cls(
            kind=kind,
            in_channels=int(config.get("in_channels", 3)),
            channels=tuple(int(c) for c in config.get("channels", (320, 640, 1280, 1280))),
            num_res_blocks=int(config.get("num_res_blocks", 2)),
            downscale_factor=int(config.get("downscale_factor", DEFAULT_DOWNSCALE[kind])),
        )


def describe_spatial_adapter(adapter: T2IAdapter) -> T2IAdapter:
    """Attach `adapter_kind`, `in_condition_channels`, `feature_channels` to a diffusers `T2IAdapter`."""
    config = SpatialAdapterConfig.from_diffusers(dict(adapter.config))
    adapter.adapter_kind = config.kind
    adapter.in_condition_channels = config.in_channels
    adapter.feature_channels = config.feature_channels
    return adapter


def build_spatial_adapter(config: SpatialAdapterConfig) -> T2IAdapter:
    """A randomly initialised diffusers `T2IAdapter` of the given shape, described for this package."""
    return describe_spatial_adapter(T2IAdapter(**config.to_diffusers()))
