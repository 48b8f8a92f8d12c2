"""Does an adapter fit a base model? Checked before any sampling, with errors that say why.

The UNet takes one adapter map per down block (`down_intrablock_additional_residuals`), added
where that block's resolution level ends, plus optionally one for the mid block (SDXL adapters).
A cross-attention down block adds it before its downsampler; a plain `DownBlock2D` gets it after
its whole forward, downsampler included (diffusers' UNet2DConditionModel). From the UNet config
we therefore know the exact (channels, height, width) every map must have.
"""

from __future__ import annotations

from t2i_adapter.adapters.kinds import FULL, FUSER, LIGHT, STYLE, XL
from t2i_adapter.errors import ModelMismatchError
from t2i_adapter.generation.base_model import BaseModel
from t2i_adapter.generation.units import AdapterUnit


def unet_feature_shapes(unet_config, latent_height: int, latent_width: int) -> list[tuple[int, int, int]]:
    """(C, H, W) of the map each down block takes, then the mid block's."""
    block_types = list(unet_config.down_block_types)
    channels = list(unet_config.block_out_channels)
    height, width = latent_height, latent_width
    shapes = []
    for index, (block_type, block_channels) in enumerate(zip(block_types, channels, strict=True)):
        downsamples = index < len(block_types) - 1
        after_downsampler = downsamples and "CrossAttn" not in block_type
        if after_downsampler:
            shapes.append((block_channels, (height + 1) // 2, (width + 1) // 2))
        else:
            shapes.append((block_channels, height, width))
        if downsamples:
            height, width = (height + 1) // 2, (width + 1) // 2
    shapes.append((channels[-1], height, width))  # mid block
    return shapes


def adapter_downscale_factor(unet_config, vae_scale_factor: int) -> int:
    """The downscale factor (image pixels per pixel of its first map) an adapter needs for this UNet:
    the VAE's factor, doubled where the first down block takes its map after its downsampler (SDXL)."""
    side = 64
    first_height = unet_feature_shapes(unet_config, side, side)[0][1]
    return vae_scale_factor * side // first_height


def _model_label(base: BaseModel) -> str:
    family = "SDXL" if base.is_sdxl else "SD1.x/2.x"
    return f"model '{base.name}' ({family})" if base.name else f"the {family} model"


def check_unit_fits(base: BaseModel, unit: AdapterUnit) -> None:
    """Static checks (no computation): family, feature channels, condition channels, token width."""
    kind = unit.kind
    if kind == FUSER:
        raise ModelMismatchError(f"{unit.label}: a CoAdapter fuser is not an adapter unit; pass it as fuser=")
    if kind == STYLE:
        context_dim = getattr(unit.adapter, "context_dim", None)
        expected = base.unet.config.cross_attention_dim
        if context_dim is not None and context_dim != expected:
            raise ModelMismatchError(
                f"{unit.label}: the style adapter makes {context_dim}-wide tokens, {_model_label(base)} "
                f"reads a {expected}-wide text context"
            )
        return
    if kind == XL and not base.is_sdxl:
        raise ModelMismatchError(f"{unit.label} is an SDXL adapter; {_model_label(base)} is not SDXL")
    if kind in (FULL, LIGHT) and base.is_sdxl:
        raise ModelMismatchError(
            f"{unit.label} is an SD1.x/2.x adapter; {_model_label(base)} needs an SDXL adapter"
        )
    expected = [shape[0] for shape in unet_feature_shapes(base.unet.config, 64, 64)]
    got = list(unit.adapter.feature_channels)
    if got != expected[: len(got)] or len(got) < len(expected) - 1:
        raise ModelMismatchError(
            f"{unit.label} gives feature maps with channels {got}; {_model_label(base)} takes "
            f"{expected[:-1]} (+ {expected[-1]} for the mid block)"
        )
    channels = getattr(unit.adapter, "in_condition_channels", None)
    condition = unit.condition
    if channels is not None and hasattr(condition, "shape") and condition.shape[-3] != channels:
        raise ModelMismatchError(
            f"{unit.label} takes {channels}-channel conditions, got a {condition.shape[-3]}-channel tensor"
        )


def check_feature_shapes(base: BaseModel, unit: AdapterUnit, maps, latent_size: tuple[int, int]) -> None:
    """After the adapter ran: every map has the shape its UNet block needs."""
    expected = unet_feature_shapes(base.unet.config, *latent_size)
    got = [tuple(feature.shape[1:]) for feature in maps]
    if got != [tuple(shape) for shape in expected[: len(got)]]:
        raise ModelMismatchError(
            f"{unit.label} gives feature maps {got}; {_model_label(base)} needs {expected[: len(got)]} "
            f"(the adapter's downscale factor does not fit the model)"
        )


def check_fuser_fits(fuser, units: list[AdapterUnit]) -> None:
    channels = tuple(getattr(fuser, "feature_channels", ()))
    tasks = []
    for unit in units:
        task = unit.task or unit.name
        if hasattr(fuser, "task_id"):
            fuser.task_id(task)  # raises UnknownNameError listing the valid conditions
        tasks.append(task)
        if unit.is_spatial and channels and tuple(unit.adapter.feature_channels) != channels:
            raise ModelMismatchError(
                f"the CoAdapter fuser takes feature channels {list(channels)}, {unit.label} gives "
                f"{list(unit.adapter.feature_channels)}"
            )
    duplicates = {task for task in tasks if tasks.count(task) > 1}
    if duplicates:
        raise ModelMismatchError(
            f"the CoAdapter fuser takes each condition once; repeated: {sorted(duplicates)}"
        )
