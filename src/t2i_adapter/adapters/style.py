"""Style adapter: CLIP image features -> extra context tokens (T2I-Adapter paper, Sec. 3.3).

The released `t2iadapter_style_sd14v1` reads the CLIP ViT-L/14 vision `last_hidden_state`
(N, 257, 1024), appends `num_tokens` learned queries, runs a small transformer and projects the
queries to the text encoder's width. The tokens are appended to the text context, so the UNet's
cross-attention sees them like extra words. diffusers has no such model, hence our own,
config-registered so it saves and loads like any diffusers model.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from t2i_adapter.adapters.kinds import STYLE
from t2i_adapter.adapters.transformer import LayerNormFP32, ResidualAttentionBlock


class StyleAdapter(ModelMixin, ConfigMixin):
    """CLIP vision tokens -> `num_tokens` context tokens of width `context_dim`."""

    adapter_kind = STYLE

    @register_to_config
    def __init__(
        self,
        width: int = 1024,
        context_dim: int = 768,
        num_heads: int = 8,
        num_layers: int = 3,
        num_tokens: int = 8,
    ):
        super().__init__()
        scale = width**-0.5
        self.style_embedding = nn.Parameter(torch.randn(1, num_tokens, width) * scale)
        self.ln_pre = LayerNormFP32(width)
        self.transformer_layers = nn.Sequential(
            *[ResidualAttentionBlock(width, num_heads) for _ in range(num_layers)]
        )
        self.ln_post = LayerNormFP32(width)
        self.proj = nn.Parameter(torch.randn(width, context_dim) * scale)

    @property
    def num_tokens(self) -> int:
        return self.config.num_tokens

    @property
    def context_dim(self) -> int:
        return self.config.context_dim

    def forward(self, vision_hidden_states: torch.Tensor) -> torch.Tensor:
        # (N, 257, width) CLIP tokens; the learned queries join them and are read out at the end.
        batch = vision_hidden_states.shape[0]
        queries = self.style_embedding.to(vision_hidden_states.dtype).expand(batch, -1, -1)
        x = torch.cat([vision_hidden_states, queries], dim=1)
        x = self.ln_pre(x)
        x = self.transformer_layers(x)
        x = self.ln_post(x[:, -self.config.num_tokens :, :])
        return x @ self.proj.to(x.dtype)  # (N, num_tokens, context_dim)
