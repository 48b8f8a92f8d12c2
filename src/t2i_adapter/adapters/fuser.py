"""CoAdapter fuser: mixes several conditions with learned, content-dependent weights.

From the CoAdapter release (TencentARC, 2023): each spatial condition's feature pyramid is
mean-pooled per level into one token per level, style conditions bring their tokens as they
are; a task embedding tells the conditions apart. A small transformer looks at all tokens
together, and its outputs scale each condition's maps per channel (`1 + proj(token)`) before
the maps of all conditions are summed; style tokens are scaled by `1 + token @ seq_proj`.
diffusers has no such model, hence our own, config-registered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from t2i_adapter.adapters.kinds import FUSER
from t2i_adapter.adapters.transformer import LayerNormFP32, ResidualAttentionBlock
from t2i_adapter.errors import ModelMismatchError, UnknownNameError

# Row of `task_embedding` per condition, fixed by the released fuser's training.
CONDITION_TASK_IDS = {
    "sketch": 0,
    "keypose": 1,
    "seg": 2,
    "depth": 3,
    "canny": 4,
    "style": 5,
    "color": 6,
    "openpose": 7,
}

FuserInput = Mapping[str, Sequence[torch.Tensor] | torch.Tensor]


class CoAdapterFuser(ModelMixin, ConfigMixin):
    """`{condition: feature maps or style tokens}` -> (fused feature maps, fused style tokens)."""

    adapter_kind = FUSER

    @register_to_config
    def __init__(
        self,
        feature_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        width: int = 768,
        num_heads: int = 8,
        num_layers: int = 3,
        num_tasks: int = 16,
    ):
        super().__init__()
        scale = width**0.5
        self.task_embedding = nn.Parameter(scale * torch.randn(num_tasks, width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(len(feature_channels), width))
        self.spatial_feat_mapping = nn.ModuleList(
            [nn.Sequential(nn.SiLU(), nn.Linear(channels, width)) for channels in feature_channels]
        )
        self.transformer_layers = nn.Sequential(
            *[ResidualAttentionBlock(width, num_heads) for _ in range(num_layers)]
        )
        self.ln_post = LayerNormFP32(width)
        self.ln_pre = LayerNormFP32(width)
        # Zero-initialised so an untrained fuser is a plain sum of the conditions.
        self.spatial_ch_projs = nn.ModuleList([nn.Linear(width, channels) for channels in feature_channels])
        for projection in self.spatial_ch_projs:
            nn.init.zeros_(projection.weight)
            nn.init.zeros_(projection.bias)
        self.seq_proj = nn.Parameter(torch.zeros(width, width))

    @property
    def feature_channels(self) -> tuple[int, ...]:
        return tuple(self.config.feature_channels)

    def task_id(self, condition: str) -> int:
        """The task-embedding row of a condition name; unknown names list the valid ones."""
        if condition not in CONDITION_TASK_IDS:
            raise UnknownNameError("CoAdapter condition", condition, CONDITION_TASK_IDS)
        return CONDITION_TASK_IDS[condition]

    def _check_maps(self, condition: str, maps: Sequence[torch.Tensor]) -> None:
        channels = tuple(feature.shape[1] for feature in maps)
        if channels != self.feature_channels:
            raise ModelMismatchError(
                f"CoAdapter fuser expects feature maps with channels {list(self.feature_channels)}, "
                f"the '{condition}' adapter gives {list(channels)}"
            )

    def forward(self, features: FuserInput) -> tuple[list[torch.Tensor] | None, torch.Tensor | None]:
        if not features:
            return None, None
        is_tokens = {name: isinstance(value, torch.Tensor) for name, value in features.items()}

        # One token sequence: per spatial condition one token per level, per style condition its tokens.
        inputs = []
        for name, value in features.items():
            task = self.task_embedding[self.task_id(name)]
            if is_tokens[name]:
                inputs.append(value + task)  # (N, T, width)
                continue
            self._check_maps(name, value)
            pooled = [
                mapping(feature.mean(dim=(2, 3)))
                for mapping, feature in zip(self.spatial_feat_mapping, value, strict=True)
            ]
            inputs.append(torch.stack(pooled, dim=1) + task + self.positional_embedding)  # (N, L, width)
        x = self.ln_post(self.transformer_layers(self.ln_pre(torch.cat(inputs, dim=1))))

        fused_maps: list[torch.Tensor] | None = None
        fused_tokens: torch.Tensor | None = None
        position = 0
        for name, value in features.items():
            if is_tokens[name]:
                length = value.shape[1]
                scaled = value * (x[:, position : position + length] @ self.seq_proj + 1)
                fused_tokens = scaled if fused_tokens is None else torch.cat([fused_tokens, scaled], dim=1)
                position += length
                continue
            scaled_maps = [
                feature * (projection(x[:, position + level])[:, :, None, None] + 1)
                for level, (projection, feature) in enumerate(zip(self.spatial_ch_projs, value, strict=True))
            ]
            if fused_maps is None:
                fused_maps = scaled_maps
            else:
                fused_maps = [total + scaled for total, scaled in zip(fused_maps, scaled_maps, strict=True)]
            position += len(value)
        return fused_maps, fused_tokens
