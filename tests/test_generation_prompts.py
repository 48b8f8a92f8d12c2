"""Prompt encoding equals diffusers' own encode_prompt on the tiny SD and SDXL components."""

from __future__ import annotations

import logging

import pytest
import torch

from t2i_adapter.generation.prompts import encode_prompt, sdxl_add_time_ids
from tiny_models import tiny_sd_base_model, tiny_sdxl_base_model


@pytest.fixture(scope="module")
def sd_base():
    return tiny_sd_base_model()


@pytest.fixture(scope="module")
def sdxl_base():
    return tiny_sdxl_base_model()


def test_sd_prompt_matches_diffusers(sd_base):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        unet=sd_base.unet,
        vae=sd_base.vae,
        text_encoder=sd_base.text_encoder,
        tokenizer=sd_base.tokenizer,
        scheduler=sd_base.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    expected, expected_negative = pipe.encode_prompt(
        ["a red cat", "a dog"], "cpu", 1, True, ["blurry", "dark"]
    )
    ours = encode_prompt(sd_base, ["a red cat", "a dog"], negative_prompts=["blurry", "dark"])
    assert ours.embeds.shape == (2, 77, 32)
    torch.testing.assert_close(ours.embeds, expected, atol=0, rtol=0)
    torch.testing.assert_close(ours.negative_embeds, expected_negative, atol=0, rtol=0)
    assert ours.pooled is None
    assert ours.context().shape == (4, 77, 32)
    # the negative prompt matters
    assert not torch.allclose(ours.negative_embeds[0], ours.negative_embeds[1])


def test_sd_without_cfg_and_repeat(sd_base):
    ours = encode_prompt(sd_base, ["a", "b"], do_cfg=False)
    assert ours.negative_embeds is None
    repeated = ours.repeat(3)
    assert repeated.embeds.shape[0] == 6
    torch.testing.assert_close(repeated.embeds[2], ours.embeds[0])
    torch.testing.assert_close(repeated.embeds[3], ours.embeds[1])


def test_long_prompt_warns_and_truncates(sd_base, caplog):
    long_prompt = "x" * 100 + " tail end words"
    with caplog.at_level(logging.WARNING, logger="t2i_adapter.generation.prompts"):
        ours = encode_prompt(sd_base, [long_prompt], do_cfg=False)
    assert ours.embeds.shape == (1, 77, 32)
    assert "tail end words" in caplog.text


def test_sdxl_prompt_matches_diffusers(sdxl_base):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(
        unet=sdxl_base.unet,
        vae=sdxl_base.vae,
        text_encoder=sdxl_base.text_encoder,
        text_encoder_2=sdxl_base.text_encoder_2,
        tokenizer=sdxl_base.tokenizer,
        tokenizer_2=sdxl_base.tokenizer_2,
        scheduler=sdxl_base.scheduler,
    )
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt("a red cat", device="cpu")
    ours = encode_prompt(sdxl_base, ["a red cat"])
    assert ours.embeds.shape == (1, 77, 64)
    torch.testing.assert_close(ours.embeds, embeds, atol=0, rtol=0)
    torch.testing.assert_close(ours.pooled, pooled, atol=0, rtol=0)
    # SDXL: no negative prompt -> zeros, like diffusers' force_zeros_for_empty_prompt
    assert torch.count_nonzero(ours.negative_embeds) == 0
    torch.testing.assert_close(ours.negative_embeds, negative)
    torch.testing.assert_close(ours.negative_pooled, negative_pooled)

    e2, n2, p2, np2 = pipe.encode_prompt("a red cat", device="cpu", negative_prompt="blurry")
    with_negative = encode_prompt(sdxl_base, ["a red cat"], negative_prompts=["blurry"])
    torch.testing.assert_close(with_negative.negative_embeds, n2, atol=0, rtol=0)
    torch.testing.assert_close(with_negative.negative_pooled, np2, atol=0, rtol=0)


def test_add_time_ids():
    ids = sdxl_add_time_ids(64, 96)
    assert ids.tolist() == [[64.0, 96.0, 0.0, 0.0, 64.0, 96.0]]
    ids = sdxl_add_time_ids(64, 96, original_size=(1024, 1024), crop_top_left=(3, 4))
    assert ids.tolist() == [[1024.0, 1024.0, 3.0, 4.0, 64.0, 96.0]]


def test_sdxl_added_conditioning_size_is_checked(sdxl_base):
    from t2i_adapter.errors import ModelMismatchError
    from t2i_adapter.generation.prompts import check_time_ids_fit

    check_time_ids_fit(sdxl_base)  # the tiny SDXL model fits: 6 * 8 + 32 = 80
    sdxl_base.text_encoder_2.config.projection_dim = 16
    try:
        with pytest.raises(ModelMismatchError, match="expects 80 added-conditioning values"):
            check_time_ids_fit(sdxl_base)
    finally:
        sdxl_base.text_encoder_2.config.projection_dim = 32
