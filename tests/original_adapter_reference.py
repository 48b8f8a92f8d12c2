"""Reference numbers for adapter parity tests, computed straight from the documented architecture.

Plain functional code on original-layout (TencentARC) state dicts, written from the description
in REFERENCE.md, independent of the modules under test (no diffusers, no nn.MultiheadAttention):
if the loader maps a key to the wrong layer, these disagree with it. Also makes random
original-layout state dicts of any size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

StateDict = dict[str, torch.Tensor]


# ---------------------------------------------------------------- random original-layout weights


def _conv(sd: StateDict, name: str, out_c: int, in_c: int, k: int, gen: torch.Generator) -> None:
    sd[f"{name}.weight"] = torch.randn(out_c, in_c, k, k, generator=gen) / math.sqrt(in_c * k * k)
    sd[f"{name}.bias"] = torch.randn(out_c, generator=gen) * 0.1


def _linear(sd: StateDict, name: str, out_f: int, in_f: int, gen: torch.Generator) -> None:
    sd[f"{name}.weight"] = torch.randn(out_f, in_f, generator=gen) / math.sqrt(in_f)
    sd[f"{name}.bias"] = torch.randn(out_f, generator=gen) * 0.1


def _norm(sd: StateDict, name: str, width: int, gen: torch.Generator) -> None:
    sd[f"{name}.weight"] = 1 + 0.1 * torch.randn(width, generator=gen)
    sd[f"{name}.bias"] = 0.1 * torch.randn(width, generator=gen)


def random_full(channels, num_res_blocks, unshuffled_in, seed=0) -> StateDict:
    """`Adapter(channels, nums_rb, cin, ksize=1, sk=True, use_conv=False)` (also XL's key layout)."""
    gen = torch.Generator().manual_seed(seed)
    sd: StateDict = {}
    _conv(sd, "conv_in", channels[0], unshuffled_in, 3, gen)
    for level, c in enumerate(channels):
        previous = channels[level - 1] if level else channels[0]
        for block in range(num_res_blocks):
            k = level * num_res_blocks + block
            if block == 0 and previous != c:
                _conv(sd, f"body.{k}.in_conv", c, previous, 1, gen)
            _conv(sd, f"body.{k}.block1", c, c, 3, gen)
            _conv(sd, f"body.{k}.block2", c, c, 1, gen)
    return sd


def random_light(channels, num_res_blocks, unshuffled_in, seed=0) -> StateDict:
    """`Adapter_light(channels, nums_rb, cin)`: per level in_conv -> resnets (3x3, 3x3) -> out_conv."""
    gen = torch.Generator().manual_seed(seed)
    sd: StateDict = {}
    for level, c in enumerate(channels):
        in_c = unshuffled_in if level == 0 else channels[level - 1]
        inter = c // 4
        _conv(sd, f"body.{level}.in_conv", inter, in_c, 1, gen)
        for block in range(num_res_blocks):
            _conv(sd, f"body.{level}.body.{block}.block1", inter, inter, 3, gen)
            _conv(sd, f"body.{level}.body.{block}.block2", inter, inter, 3, gen)
        _conv(sd, f"body.{level}.out_conv", c, inter, 1, gen)
    return sd


def _random_block(sd: StateDict, prefix: str, width: int, gen: torch.Generator) -> None:
    sd[f"{prefix}.attn.in_proj_weight"] = torch.randn(3 * width, width, generator=gen) / math.sqrt(width)
    sd[f"{prefix}.attn.in_proj_bias"] = 0.1 * torch.randn(3 * width, generator=gen)
    _linear(sd, f"{prefix}.attn.out_proj", width, width, gen)
    _norm(sd, f"{prefix}.ln_1", width, gen)
    _linear(sd, f"{prefix}.mlp.c_fc", 4 * width, width, gen)
    _linear(sd, f"{prefix}.mlp.c_proj", width, 4 * width, gen)
    _norm(sd, f"{prefix}.ln_2", width, gen)


def random_style(width, context_dim, num_layers, num_tokens, seed=0) -> StateDict:
    gen = torch.Generator().manual_seed(seed)
    sd: StateDict = {"style_embedding": torch.randn(1, num_tokens, width, generator=gen)}
    _norm(sd, "ln_pre", width, gen)
    for i in range(num_layers):
        _random_block(sd, f"transformer_layes.{i}", width, gen)
    _norm(sd, "ln_post", width, gen)
    sd["proj"] = torch.randn(width, context_dim, generator=gen) / math.sqrt(width)
    return sd


def random_fuser(feature_channels, width, num_layers, seed=0) -> StateDict:
    """Random everywhere, also where the release starts at zero, so every weight shows in the output."""
    gen = torch.Generator().manual_seed(seed)
    sd: StateDict = {
        "task_embedding": torch.randn(16, width, generator=gen),
        "positional_embedding": torch.randn(len(feature_channels), width, generator=gen),
    }
    for level, c in enumerate(feature_channels):
        _linear(sd, f"spatial_feat_mapping.{level}.1", width, c, gen)
        _linear(sd, f"spatial_ch_projs.{level}", c, width, gen)
    for i in range(num_layers):
        _random_block(sd, f"transformer_layes.{i}", width, gen)
    _norm(sd, "ln_pre", width, gen)
    _norm(sd, "ln_post", width, gen)
    sd["seq_proj"] = torch.randn(width, width, generator=gen) / math.sqrt(width)
    return sd


# ---------------------------------------------------------------- reference forwards


def _apply_conv(sd: StateDict, name: str, x: torch.Tensor) -> torch.Tensor:
    weight = sd[f"{name}.weight"]
    return F.conv2d(x, weight, sd[f"{name}.bias"], padding=weight.shape[-1] // 2)


def full_forward(sd: StateDict, x: torch.Tensor, num_res_blocks: int, xl: bool = False) -> list[torch.Tensor]:
    """PixelUnshuffle(8, XL 16) -> conv_in -> levels of resnet blocks; one feature map per level."""
    x = F.pixel_unshuffle(x, 16 if xl else 8)
    x = _apply_conv(sd, "conv_in", x)
    num_blocks = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("body."))
    features = []
    for level in range(num_blocks // num_res_blocks):
        for block in range(num_res_blocks):
            k = level * num_res_blocks + block
            # Full: every level after the first halves the size; XL: only level 2 does.
            if block == 0 and (level == 2 if xl else level > 0):
                x = F.avg_pool2d(x, 2)
            if f"body.{k}.in_conv.weight" in sd:
                x = _apply_conv(sd, f"body.{k}.in_conv", x)
            h = F.relu(_apply_conv(sd, f"body.{k}.block1", x))
            x = x + _apply_conv(sd, f"body.{k}.block2", h)
        features.append(x)
    return features


def light_forward(sd: StateDict, x: torch.Tensor) -> list[torch.Tensor]:
    x = F.pixel_unshuffle(x, 8)
    levels = 1 + max(int(k.split(".")[1]) for k in sd)
    features = []
    for level in range(levels):
        if level > 0:
            x = F.avg_pool2d(x, 2)
        x = _apply_conv(sd, f"body.{level}.in_conv", x)
        blocks = {int(k.split(".")[3]) for k in sd if k.startswith(f"body.{level}.body.")}
        for block in sorted(blocks):
            h = F.relu(_apply_conv(sd, f"body.{level}.body.{block}.block1", x))
            x = x + _apply_conv(sd, f"body.{level}.body.{block}.block2", h)
        x = _apply_conv(sd, f"body.{level}.out_conv", x)
        features.append(x)
    return features


def _layer_norm(sd: StateDict, name: str, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-5)


def _block(sd: StateDict, prefix: str, x: torch.Tensor, heads: int) -> torch.Tensor:
    """CLIP residual attention block on (N, L, D), attention written out by hand."""
    n, length, width = x.shape
    h = _layer_norm(sd, f"{prefix}.ln_1", x)
    qkv = h @ sd[f"{prefix}.attn.in_proj_weight"].T + sd[f"{prefix}.attn.in_proj_bias"]
    q, k, v = (t.reshape(n, length, heads, width // heads).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width // heads), dim=-1)
    attended = (weights @ v).transpose(1, 2).reshape(n, length, width)
    x = x + attended @ sd[f"{prefix}.attn.out_proj.weight"].T + sd[f"{prefix}.attn.out_proj.bias"]
    h = _layer_norm(sd, f"{prefix}.ln_2", x)
    h = h @ sd[f"{prefix}.mlp.c_fc.weight"].T + sd[f"{prefix}.mlp.c_fc.bias"]
    h = h * torch.sigmoid(1.702 * h)
    return x + h @ sd[f"{prefix}.mlp.c_proj.weight"].T + sd[f"{prefix}.mlp.c_proj.bias"]


def _blocks(sd: StateDict, x: torch.Tensor, heads: int) -> torch.Tensor:
    layers = {int(k.split(".")[1]) for k in sd if k.startswith("transformer_layes.")}
    for i in sorted(layers):
        x = _block(sd, f"transformer_layes.{i}", x, heads)
    return x


def style_forward(sd: StateDict, hidden: torch.Tensor, heads: int = 8) -> torch.Tensor:
    tokens = sd["style_embedding"].shape[1]
    x = torch.cat([hidden, sd["style_embedding"].expand(hidden.shape[0], -1, -1)], dim=1)
    x = _blocks(sd, _layer_norm(sd, "ln_pre", x), heads)
    return _layer_norm(sd, "ln_post", x[:, -tokens:]) @ sd["proj"]


TASK_IDS = {
    "sketch": 0,
    "keypose": 1,
    "seg": 2,
    "depth": 3,
    "canny": 4,
    "style": 5,
    "color": 6,
    "openpose": 7,
}


def fuser_forward(sd: StateDict, features: dict, heads: int = 8):
    inputs = []
    for name, value in features.items():
        task = sd["task_embedding"][TASK_IDS[name]]
        if isinstance(value, torch.Tensor):
            inputs.append(value + task)
            continue
        pooled = []
        for level, fmap in enumerate(value):
            vec = F.silu(fmap.mean(dim=(2, 3)))
            pooled.append(
                vec @ sd[f"spatial_feat_mapping.{level}.1.weight"].T
                + sd[f"spatial_feat_mapping.{level}.1.bias"]
            )
        inputs.append(torch.stack(pooled, dim=1) + task + sd["positional_embedding"])
    x = _layer_norm(sd, "ln_post", _blocks(sd, _layer_norm(sd, "ln_pre", torch.cat(inputs, dim=1)), heads))
    maps, tokens, position = None, None, 0
    for value in features.values():
        if isinstance(value, torch.Tensor):
            length = value.shape[1]
            scaled = value * (x[:, position : position + length] @ sd["seq_proj"] + 1)
            tokens = scaled if tokens is None else torch.cat([tokens, scaled], dim=1)
            position += length
            continue
        scaled_maps = []
        for level, fmap in enumerate(value):
            alpha = (
                x[:, position + level] @ sd[f"spatial_ch_projs.{level}.weight"].T
                + sd[f"spatial_ch_projs.{level}.bias"]
            )
            scaled_maps.append(fmap * (alpha[:, :, None, None] + 1))
        maps = scaled_maps if maps is None else [a + b for a, b in zip(maps, scaled_maps, strict=True)]
        position += len(value)
    return maps, tokens
