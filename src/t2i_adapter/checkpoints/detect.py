"""Tell what a state dict is: its key layout, its adapter kind, and every size, from keys and shapes.

Released files carry no config, so, like ComfyUI and the A1111 extension, we read the kind from
which keys exist (`style_embedding` -> style, `task_embedding` -> fuser, `conv_in` -> full or XL,
`body.0.in_conv` without `conv_in` -> light) and the sizes from tensor shapes, so adapters with
non-standard channel counts load too. Files written by this package also carry the config in
their safetensors metadata, which settles what shapes alone cannot (resnet blocks per level of an
original-layout file, attention heads).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from t2i_adapter.adapters.kinds import FULL, FUSER, LIGHT, STYLE, XL, check_kind
from t2i_adapter.adapters.spatial import DEFAULT_DOWNSCALE, SpatialAdapterConfig
from t2i_adapter.checkpoints.layout import DIFFUSERS, ORIGINAL, LayoutError, to_module_layout

# Keys of the safetensors metadata this package writes.
META_KIND = "t2i_adapter.kind"
META_CONFIG = "t2i_adapter.config"

DEFAULT_NUM_HEADS = 8  # every released style adapter and fuser; heads leave no trace in the shapes
DEFAULT_NUM_RES_BLOCKS = 2  # every released full and XL adapter


@dataclass
class DetectedAdapter:
    """A state dict understood: kind, module keys, and the config to build the module with."""

    kind: str
    layout: str
    state_dict: dict[str, torch.Tensor]  # in the module's own key names
    config: SpatialAdapterConfig | dict  # spatial config, or init kwargs of StyleAdapter / CoAdapterFuser


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """`diffusers` when resnets are nested (`.resnets.`), else `original`."""
    return DIFFUSERS if any(".resnets." in key for key in state_dict) else ORIGINAL


def strip_original_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the `adapter.` prefix some original-layout files carry (diffusers keys keep one)."""
    if detect_layout(state_dict) == DIFFUSERS:
        # A training module holding a `T2IAdapter` as `.adapter` saves `adapter.adapter.*`.
        while state_dict and all(key.startswith("adapter.adapter.") for key in state_dict):
            state_dict = {key.removeprefix("adapter."): value for key, value in state_dict.items()}
        return dict(state_dict)
    return {key.removeprefix("adapter."): value for key, value in state_dict.items()}


def detect_kind(state_dict: Mapping[str, torch.Tensor]) -> str:
    """full / light / xl / style / fuser from the keys (and conv_in's input width for XL)."""
    keys = {key.removeprefix("adapter.") for key in state_dict}
    if "style_embedding" in keys:
        return STYLE
    if "task_embedding" in keys:
        return FUSER
    if "conv_in.weight" in keys:
        conv_in = state_dict.get("conv_in.weight", state_dict.get("adapter.conv_in.weight"))
        # SDXL adapters unshuffle by 16: 1 or 3 condition channels -> 256 or 768 inputs (what the UIs test).
        return XL if conv_in.shape[1] in (256, 768) else FULL
    if "body.0.in_conv.weight" in keys:
        return LIGHT
    shown = ", ".join(sorted(keys)[:3])
    raise LayoutError(f"does not look like a T2I-Adapter checkpoint (keys: {shown}, ...)")


def _level_indices(keys, pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(match[1]) for key in keys if (match := regex.match(key))})


def _check_released_variant(state_dict: Mapping[str, torch.Tensor]) -> None:
    """Refuse the early `Adapter` options (`sk=False` skip convs, conv downsampling, 3x3 `ksize`).

    Every released full and XL adapter uses `ksize=1, sk=True, use_conv=False`, the layout
    diffusers' `T2IAdapter` holds; the other options would need a different network.
    """
    odd = [key for key in state_dict if ".skep." in key or ".down_opt." in key]
    block2 = state_dict.get("body.0.block2.weight")
    if odd or (block2 is not None and block2.shape[-1] != 1):
        raise LayoutError(
            "an early T2I-Adapter variant (skip convs, conv downsampling or 3x3 ksize) that is not "
            "supported; only the released layout (ksize=1, sk=True, use_conv=False) is"
        )


def _original_num_res_blocks(state_dict: Mapping[str, torch.Tensor]) -> int:
    """Resnet blocks per level of an original full/XL file, whose blocks are numbered flat.

    `in_conv` sits on the first block of every level that changes channels, so a count R is
    possible when it divides the number of blocks and every `in_conv` index. Several may fit
    (a level that keeps its channels leaves no trace); prefer the released 2, then 4 levels.
    """
    blocks = _level_indices(state_dict, r"^body\.(\d+)\.block1\.weight$")
    in_convs = _level_indices(state_dict, r"^body\.(\d+)\.in_conv\.weight$")
    if not blocks:
        raise LayoutError("has conv_in but no resnet blocks (body.N.block1)")
    total = blocks[-1] + 1
    fits = [r for r in range(1, total + 1) if total % r == 0 and all(i % r == 0 for i in in_convs)]
    if DEFAULT_NUM_RES_BLOCKS in fits:
        return DEFAULT_NUM_RES_BLOCKS
    if total % 4 == 0 and total // 4 in fits:
        return total // 4
    return fits[-1]


def _conv_input_channels(total: int, kind: str, downscale: int | None, what: str) -> tuple[int, int]:
    """(condition channels, downscale factor) from the width after pixel-unshuffle."""
    downscale = downscale or DEFAULT_DOWNSCALE[kind]
    if total % (downscale * downscale):
        raise LayoutError(
            f"{what} takes {total} channels, not a multiple of {downscale}x{downscale} "
            f"(the {kind} adapter's pixel-unshuffle); save it as a diffusers folder with its config"
        )
    return total // (downscale * downscale), downscale


def infer_spatial_config(
    state_dict: Mapping[str, torch.Tensor], kind: str, downscale_factor: int | None = None
) -> SpatialAdapterConfig:
    """Every size of a full / light / XL adapter from the shapes of its diffusers-layout weights."""
    levels = _level_indices(state_dict, r"^adapter\.body\.(\d+)\.")
    if not levels or levels != list(range(len(levels))):
        raise LayoutError(f"has no consecutive adapter levels for a {kind} adapter")
    num_res_blocks = len(_level_indices(state_dict, r"^adapter\.body\.0\.resnets\.(\d+)\.block1\.weight$"))
    if kind == LIGHT:
        outs = [state_dict[f"adapter.body.{level}.out_conv.weight"].shape[0] for level in levels]
        first = state_dict["adapter.body.0.in_conv.weight"].shape[1]
        in_channels, downscale = _conv_input_channels(first, kind, downscale_factor, "body.0.in_conv")
        if len(outs) < 2 or outs[-1] != outs[-2]:
            raise LayoutError(f"light adapter levels {outs}: the last two must have the same channels")
        channels = tuple(outs[:-1])  # diffusers' light adapter repeats the last level itself
    else:
        if "adapter.conv_in.weight" not in state_dict:
            raise LayoutError(f"a {kind} adapter needs conv_in weights")
        first = state_dict["adapter.conv_in.weight"].shape[1]
        in_channels, downscale = _conv_input_channels(first, kind, downscale_factor, "conv_in")
        channels = tuple(
            state_dict[f"adapter.body.{level}.resnets.0.block1.weight"].shape[0]
            for level in levels
            if f"adapter.body.{level}.resnets.0.block1.weight" in state_dict
        )
        if len(channels) != len(levels):
            raise LayoutError(f"a {kind} adapter level has no resnet blocks")
    if num_res_blocks == 0:
        raise LayoutError(f"a {kind} adapter has no resnet blocks")
    return SpatialAdapterConfig(kind, in_channels, channels, num_res_blocks, downscale)


def infer_transformer_config(
    state_dict: Mapping[str, torch.Tensor], kind: str, num_heads: int | None = None
) -> dict:
    """Init kwargs of `StyleAdapter` / `CoAdapterFuser` from the shapes of their weights."""
    num_layers = len(_level_indices(state_dict, r"^transformer_layers\.(\d+)\.attn\.in_proj_weight$"))
    if kind == STYLE:
        embedding, proj = state_dict["style_embedding"], state_dict["proj"]
        width = embedding.shape[-1]
        config = {
            "width": width,
            "context_dim": proj.shape[1],
            "num_layers": num_layers,
            "num_tokens": embedding.shape[1],
        }
    else:
        width = state_dict["task_embedding"].shape[1]
        levels = _level_indices(state_dict, r"^spatial_feat_mapping\.(\d+)\.1\.weight$")
        config = {
            "feature_channels": [state_dict[f"spatial_feat_mapping.{i}.1.weight"].shape[1] for i in levels],
            "width": width,
            "num_layers": num_layers,
            "num_tasks": state_dict["task_embedding"].shape[0],
        }
    heads = num_heads or DEFAULT_NUM_HEADS
    if width % heads:
        raise LayoutError(f"width {width} does not split into {heads} attention heads; pass num_heads")
    config["num_heads"] = heads
    return config


def _metadata_config(metadata: Mapping[str, str]) -> dict:
    try:
        config = json.loads(metadata.get(META_CONFIG, "{}"))
    except json.JSONDecodeError:
        return {}
    return config if isinstance(config, dict) else {}


def detect_adapter(
    state_dict: Mapping[str, torch.Tensor],
    kind: str | None = None,
    *,
    metadata: Mapping[str, str] | None = None,
    num_res_blocks: int | None = None,
    num_heads: int | None = None,
) -> DetectedAdapter:
    """Kind (unless given), layout and config of a bare state dict; keys renamed for the module."""
    metadata = metadata or {}
    saved = _metadata_config(metadata)
    state_dict = strip_original_prefix(state_dict)
    layout = detect_layout(state_dict)
    if kind is None:
        kind = metadata.get(META_KIND) or detect_kind(state_dict)
    check_kind(kind)
    if kind in (STYLE, FUSER):
        module_keys = to_module_layout(state_dict, kind, layout, 0)
        heads = num_heads or saved.get("num_heads")
        return DetectedAdapter(kind, layout, module_keys, infer_transformer_config(module_keys, kind, heads))
    if layout == ORIGINAL and kind != LIGHT:
        _check_released_variant(state_dict)
        blocks = num_res_blocks or saved.get("num_res_blocks") or _original_num_res_blocks(state_dict)
    else:
        blocks = 0  # unused: diffusers and light layouts name their levels
    module_keys = to_module_layout(state_dict, kind, layout, blocks)
    config = infer_spatial_config(module_keys, kind, saved.get("downscale_factor"))
    return DetectedAdapter(kind, layout, module_keys, config)
