"""The CLIP-style transformer block shared by the style adapter and the CoAdapter fuser.

Written here because neither diffusers nor transformers has a block with this exact parameter
layout (a fused `nn.MultiheadAttention` in-projection, `ln_1`/`ln_2`, `mlp.c_fc`/`mlp.c_proj`),
and the released checkpoints store their weights under these names.
"""

from __future__ import annotations

import torch
from torch import nn


class LayerNormFP32(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back, so half-precision inputs stay stable (as CLIP)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class QuickGELU(nn.Module):
    """GELU approximated as x * sigmoid(1.702 x) (CLIP, Radford et al. 2021)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)); tokens (N, L, D)."""

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, num_heads, batch_first=True)
        self.ln_1 = LayerNormFP32(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, width * 4))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(width * 4, width))
        self.ln_2 = LayerNormFP32(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.ln_1(x)
        x = x + self.attn(normed, normed, normed, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))
