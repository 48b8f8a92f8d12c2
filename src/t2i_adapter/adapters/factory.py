"""New (untrained) spatial adapters sized for a given UNet, for training from scratch.

The adapter must return one feature map per place the UNet adds them, with the UNet's channels
there: SD1.x/2.x take one map per down block (`full`, `light`); SDXL takes one per down block plus
one for the mid block, which has the last block's channels (`xl`, the released SDXL layout).
"""

from __future__ import annotations

from diffusers import T2IAdapter

from t2i_adapter.adapters.kinds import FULL, LIGHT, SPATIAL_KINDS, XL
from t2i_adapter.adapters.spatial import DEFAULT_DOWNSCALE, SpatialAdapterConfig, build_spatial_adapter
from t2i_adapter.errors import ModelMismatchError, UnknownNameError

# Resnet blocks per level in the released adapters: 2 (full, XL), 4 (the light colour adapter).
DEFAULT_NUM_RES_BLOCKS = {FULL: 2, XL: 2, LIGHT: 4}


def unet_feature_channels(unet, kind: str) -> tuple[int, ...]:
    """Channels of each feature map a `kind` adapter must return to fit `unet`, first level first."""
    blocks = tuple(int(c) for c in unet.config.block_out_channels)
    return (*blocks, blocks[-1]) if kind == XL else blocks


def spatial_config_for_unet(
    unet,
    kind: str = FULL,
    condition_channels: int = 3,
    num_res_blocks: int | None = None,
    downscale_factor: int | None = None,
) -> SpatialAdapterConfig:
    """The `SpatialAdapterConfig` whose feature maps fit `unet` (see the module docstring).

    `downscale_factor` (image pixels per pixel of the first map) depends on the VAE too; None takes
    the released adapters' (8, or 16 for XL), which fits SD1.x/2.x and SDXL.
    """
    if kind not in SPATIAL_KINDS:
        raise UnknownNameError("trainable adapter kind", kind, SPATIAL_KINDS)
    features = unet_feature_channels(unet, kind)
    if kind == LIGHT:
        if len(features) < 2 or features[-1] != features[-2]:
            raise ModelMismatchError(
                f"a light adapter repeats its last level's channels, but this UNet's down blocks have "
                f"{list(features)}; use a full adapter"
            )
        channels = features[:-1]
    else:
        channels = features
    blocks = num_res_blocks or DEFAULT_NUM_RES_BLOCKS[kind]
    downscale = downscale_factor or DEFAULT_DOWNSCALE[kind]
    return SpatialAdapterConfig(kind, condition_channels, channels, blocks, downscale)


def new_adapter_for_unet(
    unet,
    kind: str = FULL,
    condition_channels: int = 3,
    num_res_blocks: int | None = None,
    downscale_factor: int | None = None,
) -> T2IAdapter:
    """A randomly initialised full / light / xl adapter whose features fit `unet`."""
    config = spatial_config_for_unet(unet, kind, condition_channels, num_res_blocks, downscale_factor)
    return build_spatial_adapter(config)
