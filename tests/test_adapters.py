"""The adapter networks built in code: feature shapes of every kind, odd sizes, style tokens, fuser."""

from __future__ import annotations

import pytest
import torch
from diffusers import T2IAdapter

import tiny_models
from t2i_adapter.adapters import (
    CoAdapterFuser,
    SpatialAdapterConfig,
    StyleAdapter,
    build_spatial_adapter,
    describe_spatial_adapter,
    new_adapter_for_unet,
)
from t2i_adapter.errors import ModelMismatchError, UnknownNameError

CHANNELS = (8, 16, 32, 32)


@pytest.mark.parametrize(
    ("kind", "channels", "in_channels", "downscale", "expected"),
    [
        ("full", CHANNELS, 1, 8, [(8, 16, 16), (16, 8, 8), (32, 4, 4), (32, 2, 2)]),
        ("light", CHANNELS[:-1], 3, 8, [(8, 16, 16), (16, 8, 8), (32, 4, 4), (32, 2, 2)]),
        ("xl", CHANNELS, 3, 16, [(8, 8, 8), (16, 8, 8), (32, 4, 4), (32, 4, 4)]),
    ],
)
def test_spatial_feature_shapes(kind, channels, in_channels, downscale, expected):
    adapter = build_spatial_adapter(SpatialAdapterConfig(kind, in_channels, channels, 2, downscale))
    assert adapter.adapter_kind == kind
    assert adapter.in_condition_channels == in_channels
    assert adapter.feature_channels == tuple(shape[0] for shape in expected)
    with torch.no_grad():
        features = adapter(torch.rand(2, in_channels, 128, 128))
    assert [tuple(f.shape) for f in features] == [(2, *shape) for shape in expected]


def test_odd_sizes_round_up_instead_of_crashing():
    # 72 x 200 is a multiple of the unshuffle (8) but not of the total (64): pooling rounds up.
    adapter = build_spatial_adapter(SpatialAdapterConfig("full", 1, CHANNELS, 1, 8))
    with torch.no_grad():
        features = adapter(torch.rand(1, 1, 72, 200))
    assert [tuple(f.shape[2:]) for f in features] == [(9, 25), (5, 13), (3, 7), (2, 4)]


def test_plain_diffusers_adapter_gets_described():
    adapter = describe_spatial_adapter(
        T2IAdapter(in_channels=3, channels=[8, 16], adapter_type="light_adapter")
    )
    assert (adapter.adapter_kind, adapter.in_condition_channels, adapter.feature_channels) == (
        "light",
        3,
        (8, 16, 16),
    )
    with pytest.raises(ModelMismatchError, match="adapter_type 'huge'"):
        SpatialAdapterConfig.from_diffusers({"adapter_type": "huge"})


def test_style_adapter_tokens_and_batch_independence():
    torch.manual_seed(0)
    style = StyleAdapter(width=32, context_dim=16, num_heads=4, num_layers=2, num_tokens=3).eval()
    hidden = torch.randn(3, 7, 32)
    with torch.no_grad():
        tokens = style(hidden)
        single = style(hidden[1:2])
    assert tokens.shape == (3, 3, 16)
    assert torch.allclose(tokens[1:2], single, atol=1e-5)  # each image's tokens depend on it alone
    assert not torch.allclose(tokens[0], tokens[1])


def _maps(seed: int, batch: int = 2) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, s, s, generator=gen) for c, s in zip(CHANNELS, (8, 4, 2, 1), strict=True)]


def test_untrained_fuser_is_a_plain_sum():
    # The scaling projections start at zero, so a fresh fuser adds the conditions up unchanged.
    fuser = CoAdapterFuser(feature_channels=CHANNELS, width=16, num_heads=4, num_layers=1).eval()
    canny, depth, style = _maps(1), _maps(2), torch.randn(2, 4, 16)
    with torch.no_grad():
        maps, tokens = fuser({"canny": canny, "depth": depth, "style": style})
    assert all(torch.allclose(m, a + b) for m, a, b in zip(maps, canny, depth, strict=True))
    assert torch.equal(tokens, style)
    assert fuser({}) == (None, None)
    with torch.no_grad():
        only_maps, no_tokens = fuser({"sketch": canny})
    assert no_tokens is None and len(only_maps) == 4


def test_fuser_rejects_unknown_conditions_and_wrong_channels():
    fuser = CoAdapterFuser(feature_channels=CHANNELS, width=16, num_heads=4, num_layers=1)
    with pytest.raises(UnknownNameError, match="unknown CoAdapter condition 'lineart'; valid: canny"):
        fuser({"lineart": _maps(1)})
    wrong = [torch.randn(1, 4, 8, 8)] * 4
    with pytest.raises(ModelMismatchError, match=r"channels \[8, 16, 32, 32\].*\[4, 4, 4, 4\]"):
        fuser({"canny": wrong})


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_new_adapter_for_unet_feeds_the_unet(family):
    if family == "sd":
        components, kind, channels = tiny_models.tiny_sd_components(), "full", 1
    else:
        components, kind, channels = tiny_models.tiny_sdxl_components(), "xl", 3
    unet = components["unet"]
    adapter = new_adapter_for_unet(unet, kind, channels)
    assert adapter.adapter_kind == kind and adapter.in_condition_channels == channels
    size = tiny_models.TINY_IMAGE_SIZE
    with torch.no_grad():
        features = adapter(torch.rand(1, channels, size, size))
    latents = torch.randn(1, 4, size // 8, size // 8)
    text = torch.randn(1, 77, unet.config.cross_attention_dim)
    extra = {}
    if family == "sdxl":
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        extra = {"added_cond_kwargs": {"text_embeds": torch.randn(1, pooled), "time_ids": torch.zeros(1, 6)}}
    with torch.no_grad():
        plain = unet(latents, 10, text, **extra).sample
        steered = unet(
            latents, 10, text, down_intrablock_additional_residuals=[f.clone() for f in features], **extra
        ).sample
    assert not torch.allclose(plain, steered)  # every map was consumed at a matching shape


def test_light_adapter_needs_equal_last_channels():
    with pytest.raises(ModelMismatchError, match=r"\[32, 64\]; use a full adapter"):
        new_adapter_for_unet(tiny_models.tiny_sd_components()["unet"], "light")
    with pytest.raises(UnknownNameError, match="style"):
        new_adapter_for_unet(tiny_models.tiny_sd_components()["unet"], "style")
