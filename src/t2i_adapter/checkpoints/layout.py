"""Key layouts: the original TencentARC names <-> the names of the modules this package builds.

Spatial adapters are diffusers `T2IAdapter`s, so their "diffusers" layout is the module's own.
The original layout numbers resnet blocks flat (`body.{level * num_res_blocks + block}`), keeps
each level's `in_conv` on the level's first block, and (light adapter) nests the blocks as
`body.{level}.body.{block}`. Style adapter and fuser keep the original names except the
original's misspelt `transformer_layes`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from t2i_adapter.adapters.kinds import FUSER, LIGHT, STYLE

if TYPE_CHECKING:  # only renames keys: the CLI reads LAYOUTS for its help without importing torch
    import torch

StateDict = dict[str, "torch.Tensor"]

ORIGINAL = "original"
DIFFUSERS = "diffusers"
LAYOUTS = (DIFFUSERS, ORIGINAL)

_ORIGINAL_TRANSFORMER = "transformer_layes."
_OUR_TRANSFORMER = "transformer_layers."


class LayoutError(ValueError):
    """A state dict whose keys do not follow the layout we were told; the loader adds the file name."""


def _unexpected(keys: list[str], layout: str) -> LayoutError:
    shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
    return LayoutError(f"unexpected keys for the {layout} layout: {shown}")


# ---------------------------------------------------------------- full and XL adapters


_ORIGINAL_FULL_BLOCK = re.compile(r"^body\.(\d+)\.(block1|block2|in_conv)\.(weight|bias)$")
_DIFFUSERS_FULL_RESNET = re.compile(r"^adapter\.body\.(\d+)\.resnets\.(\d+)\.(block1|block2)\.(weight|bias)$")
_DIFFUSERS_FULL_IN_CONV = re.compile(r"^adapter\.body\.(\d+)\.in_conv\.(weight|bias)$")


def full_original_to_diffusers(state_dict: Mapping[str, torch.Tensor], num_res_blocks: int) -> StateDict:
    """`body.{level*R + block}.blockN` -> `adapter.body.{level}.resnets.{block}.blockN` (full and XL)."""
    converted: StateDict = {}
    unexpected = []
    for key, tensor in state_dict.items():
        if key.startswith("conv_in."):
            converted["adapter." + key] = tensor
            continue
        match = _ORIGINAL_FULL_BLOCK.match(key)
        if match is None:
            unexpected.append(key)
            continue
        index, name, param = int(match[1]), match[2], match[3]
        level, block = divmod(index, num_res_blocks)
        if name == "in_conv":
            if block != 0:  # a level changes channels only in its first block
                unexpected.append(key)
                continue
            converted[f"adapter.body.{level}.in_conv.{param}"] = tensor
        else:
            converted[f"adapter.body.{level}.resnets.{block}.{name}.{param}"] = tensor
    if unexpected:
        raise _unexpected(unexpected, ORIGINAL)
    return converted


def full_diffusers_to_original(state_dict: Mapping[str, torch.Tensor], num_res_blocks: int) -> StateDict:
    """Inverse of `full_original_to_diffusers`: the layout ComfyUI and the A1111 extension read."""
    converted: StateDict = {}
    unexpected = []
    for key, tensor in state_dict.items():
        if key.startswith("adapter.conv_in."):
            converted[key.removeprefix("adapter.")] = tensor
        elif match := _DIFFUSERS_FULL_RESNET.match(key):
            index = int(match[1]) * num_res_blocks + int(match[2])
            converted[f"body.{index}.{match[3]}.{match[4]}"] = tensor
        elif match := _DIFFUSERS_FULL_IN_CONV.match(key):
            converted[f"body.{int(match[1]) * num_res_blocks}.in_conv.{match[2]}"] = tensor
        else:
            unexpected.append(key)
    if unexpected:
        raise _unexpected(unexpected, DIFFUSERS)
    return converted


# ---------------------------------------------------------------- light adapter


_ORIGINAL_LIGHT = re.compile(
    r"^body\.(\d+)\.(?:(in_conv|out_conv)|body\.(\d+)\.(block1|block2))\.(weight|bias)$"
)
_DIFFUSERS_LIGHT = re.compile(
    r"^adapter\.body\.(\d+)\.(?:(in_conv|out_conv)|resnets\.(\d+)\.(block1|block2))\.(weight|bias)$"
)


def _convert_light(
    state_dict: Mapping[str, torch.Tensor], pattern: re.Pattern, to_diffusers: bool
) -> StateDict:
    converted: StateDict = {}
    unexpected = []
    for key, tensor in state_dict.items():
        match = pattern.match(key)
        if match is None:
            unexpected.append(key)
            continue
        level, conv, block, name, param = match.groups()
        prefix, nested = ("adapter.body", "resnets") if to_diffusers else ("body", "body")
        inner = conv if conv else f"{nested}.{block}.{name}"
        converted[f"{prefix}.{level}.{inner}.{param}"] = tensor
    if unexpected:
        raise _unexpected(unexpected, ORIGINAL if to_diffusers else DIFFUSERS)
    return converted


def light_original_to_diffusers(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """`body.{level}.body.{block}.blockN` -> `adapter.body.{level}.resnets.{block}.blockN`."""
    return _convert_light(state_dict, _ORIGINAL_LIGHT, to_diffusers=True)


def light_diffusers_to_original(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Inverse of `light_original_to_diffusers`."""
    return _convert_light(state_dict, _DIFFUSERS_LIGHT, to_diffusers=False)


# ---------------------------------------------------------------- style adapter and fuser


def transformer_original_to_ours(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Style adapter / fuser: rename the original `transformer_layes.` to `transformer_layers.`."""
    return {
        (
            _OUR_TRANSFORMER + key[len(_ORIGINAL_TRANSFORMER) :]
            if key.startswith(_ORIGINAL_TRANSFORMER)
            else key
        ): t
        for key, t in state_dict.items()
    }


def transformer_ours_to_original(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Inverse of `transformer_original_to_ours`."""
    return {
        (_ORIGINAL_TRANSFORMER + key[len(_OUR_TRANSFORMER) :] if key.startswith(_OUR_TRANSFORMER) else key): t
        for key, t in state_dict.items()
    }


# ---------------------------------------------------------------- dispatch


def to_module_layout(
    state_dict: Mapping[str, torch.Tensor], kind: str, layout: str, num_res_blocks: int
) -> StateDict:
    """Keys of a checkpoint in `layout` -> the keys of the module we build for `kind`."""
    if kind in (STYLE, FUSER):
        return transformer_original_to_ours(state_dict)
    if layout == DIFFUSERS:
        return dict(state_dict)
    if kind == LIGHT:
        return light_original_to_diffusers(state_dict)
    return full_original_to_diffusers(state_dict, num_res_blocks)


def from_module_layout(
    state_dict: Mapping[str, torch.Tensor], kind: str, layout: str, num_res_blocks: int
) -> StateDict:
    """The module's keys -> `layout` (the inverse of `to_module_layout`)."""
    if kind in (STYLE, FUSER):
        return transformer_ours_to_original(state_dict) if layout == ORIGINAL else dict(state_dict)
    if layout == DIFFUSERS:
        return dict(state_dict)
    if kind == LIGHT:
        return light_diffusers_to_original(state_dict)
    return full_diffusers_to_original(state_dict, num_res_blocks)
