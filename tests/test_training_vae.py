"""Training encodes pictures with generation's VAE precision rule (`generation/vae.py`).

SDXL's fp16 VAE overflows in fp16 (NaN/inf latents on real pictures): training encodes with its
encoder upcast to fp32 once, then casts the latents to the weight dtype, whether it encodes every
step or once into the latent cache (or `data prepare --model`). SD's fp16 VAE and a VAE whose
config says `force_upcast: false` (the fp16-fix VAE) encode in fp16. Latents that still come out
NaN/inf stop the run with one line naming the samples.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from t2i_adapter.generation.base_model import load_base_model
from t2i_adapter.interfaces.cli.main import main as cli
from t2i_adapter.training import objective, train
from t2i_adapter.training.objective import FrozenParts, _latent_posterior
from test_data_formats import TAG, write_folder
from test_training import config
from tiny_models import save_tiny_sdxl, tiny_sd_base_model, tiny_sdxl_base_model


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory) -> Path:
    return save_tiny_sdxl(tmp_path_factory.mktemp("models") / "tiny-sdxl")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("data") / "photos", count=4)


def _pictures(count: int = 2, side: int = 64) -> torch.Tensor:
    return torch.rand(count, 3, side, side, generator=torch.Generator().manual_seed(6)) * 2 - 1


def _frozen(base) -> FrozenParts:
    return FrozenParts(base=base, vae_config=base.vae.config, is_sdxl=base.is_sdxl, weight_dtype=base.dtype)


def _encode_for_the_loss(base, pixels: torch.Tensor):
    """What the uncached loss does with a batch's pixels: the posterior's mean and std."""
    batch = SimpleNamespace(pixels=pixels, latent_mean=None, latent_std=None, wheres=None)
    return _latent_posterior(batch, _frozen(base))


def _record_encoder_runs(vae) -> list[tuple[torch.dtype, bool]]:
    """(output dtype, autocast on) of the encoder's first and last convolution, per call."""
    seen: list[tuple[torch.dtype, bool]] = []

    def record(module, inputs, output):
        seen.append((output.dtype, torch.is_autocast_enabled("cpu")))

    vae.encoder.conv_in.register_forward_hook(record)
    vae.quant_conv.register_forward_hook(record)
    return seen


def _fp32_twin_posterior(base, pixels: torch.Tensor):
    """The posterior of `base`'s fp16 VAE weights run in fp32 (diffusers' training scripts' VAE)."""
    twin = tiny_sdxl_base_model().vae
    twin.load_state_dict(base.vae.state_dict())
    with torch.no_grad():
        return twin.encode(pixels.float()).latent_dist


def test_sdxl_fp16_vae_encodes_training_pictures_in_fp32_once_upcast():
    """`train --mixed-precision fp16` on SDXL: the encoder is upcast in place once (the decoder is
    left in fp16) and the latents are an fp32 VAE's on the same weights, cast to fp16 for the UNet."""
    base = tiny_sdxl_base_model().to(dtype=torch.float16)
    seen = _record_encoder_runs(base.vae)
    pixels = _pictures().to(torch.float16)
    mean, std = _encode_for_the_loss(base, pixels)
    encoder = next(base.vae.encoder.parameters())
    again, _ = _encode_for_the_loss(base, pixels)
    assert [dtype for dtype, _ in seen] == [torch.float32] * 4
    assert next(base.vae.encoder.parameters()) is encoder and encoder.dtype == torch.float32
    assert base.vae.quant_conv.weight.dtype == torch.float32
    assert {p.dtype for p in base.vae.decoder.parameters()} == {torch.float16}
    assert mean.dtype == std.dtype == torch.float16
    expected = _fp32_twin_posterior(base, pixels)
    assert torch.equal(mean, expected.mean.to(torch.float16))
    assert torch.equal(std, expected.std.to(torch.float16))
    assert torch.equal(again, mean)


def _fp16_fix(base):
    """madebyollin/sdxl-vae-fp16-fix says so in its config: it does not need an upcast."""
    base.vae.register_to_config(force_upcast=False)
    return base


@pytest.mark.parametrize(
    ("make_base", "runs_in"),
    [
        (tiny_sd_base_model, torch.float16),  # SD1.5's VAE is fine in fp16
        (lambda: _fp16_fix(tiny_sdxl_base_model()), torch.float16),
        (tiny_sdxl_base_model, torch.float32),
    ],
    ids=["sd", "sdxl-fp16-fix", "sdxl"],
)
def test_the_encoder_runs_in_the_rules_dtype_even_under_the_trainers_autocast(make_base, runs_in):
    """The loss runs under the trainer's autocast (fp16 on CUDA), which would run the convolutions
    of an upcast encoder in fp16 again, and the uncached encode in other dtypes than the cache's:
    the encode runs outside it, in the rule's dtype, for each kind of VAE."""
    base = make_base().to(dtype=torch.float16)
    seen = _record_encoder_runs(base.vae)
    with torch.autocast("cpu", dtype=torch.float16):
        mean, std = _encode_for_the_loss(base, _pictures().to(torch.float16))
    assert seen == [(runs_in, False)] * 2
    assert {p.dtype for p in base.vae.encoder.parameters()} == {runs_in}
    assert mean.dtype == std.dtype == torch.float16
    assert torch.isfinite(mean).all() and torch.isfinite(std).all()


@pytest.fixture
def loss_latents(monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """(latent mean, the batch's pixels when the loss encoded them) of each micro-batch."""
    real = objective._latent_posterior
    seen = []

    def recording(batch, frozen):
        mean, std = real(batch, frozen)
        seen.append((mean.clone(), None if batch.pixels is None else batch.pixels.clone()))
        return mean, std

    monkeypatch.setattr(objective, "_latent_posterior", recording)
    return seen


def test_cached_and_uncached_sdxl_fp16_training_see_the_same_fp32_encoded_latents(
    tiny_sdxl, folder, tmp_path, loss_latents
):
    train(config(tiny_sdxl, folder, tmp_path / "plain", max_steps=2, mixed_precision="fp16"))
    train(
        config(
            tiny_sdxl, folder, tmp_path / "cached", max_steps=2, mixed_precision="fp16", cache_latents=True
        )
    )
    (plain_1, pixels_1), (plain_2, pixels_2), (cached_1, none_1), (cached_2, none_2) = loss_latents
    assert none_1 is none_2 is None  # the cached run read its latents back
    assert torch.equal(cached_1, plain_1) and torch.equal(cached_2, plain_2)
    base = load_base_model(str(tiny_sdxl), dtype=torch.float16)
    for latents, pixels in ((plain_1, pixels_1), (plain_2, pixels_2)):
        assert latents.dtype == torch.float16
        assert torch.equal(latents, _fp32_twin_posterior(base, pixels).mean.to(torch.float16))


@pytest.fixture
def overflowing_vae(monkeypatch):
    """Every VAE encodes to inf (what SDXL's VAE does in fp16 on real pictures)."""
    from diffusers import AutoencoderKL

    real = AutoencoderKL._encode
    monkeypatch.setattr(AutoencoderKL, "_encode", lambda self, x: real(self, x) * float("inf"))


NAMED = r"the VAE encoded \S+/s0\d\.png, \S+/s0\d\.png to NaN/inf latents \(float32\)"


@pytest.mark.parametrize("cache_latents", [False, True], ids=["every-step", "cache"])
def test_nan_latents_stop_training_naming_the_samples(
    tiny_sdxl, folder, tmp_path, overflowing_vae, cache_latents
):
    with pytest.raises(objective.NonFiniteLatentsError, match=NAMED + ".*train --mixed-precision bf16 or no"):
        train(config(tiny_sdxl, folder, tmp_path / "run", cache_latents=cache_latents))
    assert not (tmp_path / "run" / "adapter.safetensors").exists()


def test_nan_latents_stop_data_prepare_naming_the_samples(tiny_sdxl, folder, tmp_path, overflowing_vae):
    from t2i_adapter.training.prepare import PrepareSettings, prepare_dataset

    settings = PrepareSettings(
        str(folder),
        str(tmp_path / "prepared"),
        cond_type=TAG,
        model=str(tiny_sdxl),
        resolution=64,
        batch_size=2,
        progress=False,
    )
    with pytest.raises(objective.NonFiniteLatentsError, match=NAMED + ".*data prepare --dtype bfloat16"):
        prepare_dataset(settings)


def test_nan_latents_are_one_error_line_on_the_cli(tiny_sdxl, folder, tmp_path, overflowing_vae, capsys):
    arguments = ["train", "--model", str(tiny_sdxl), "--data", str(folder), "--cond-type", TAG]
    arguments += ["--output-dir", str(tmp_path / "run"), "--resolution", "64", "--batch-size", "4"]
    assert cli([*arguments, "--max-steps", "1", "--no-progress"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1
    assert re.match(
        r"error: the VAE encoded (\S+/s0\d\.png, ){2}\S+/s0\d\.png and 1 more to NaN/inf", error[0]
    )
    assert "train --mixed-precision bf16 or no" in error[0] and "madebyollin/sdxl-vae-fp16-fix" in error[0]
