"""The diffusion training objective for an adapter (Mou et al. 2023, eq. 6; Ho et al. 2020, eq. 14).

A clean latent z0 is noised to z_t = sqrt(a_t) z0 + sqrt(1 - a_t) eps at a random timestep t;
the frozen UNet, helped by the adapter's features, predicts the target the base model was trained
for (eps, or v = sqrt(a_t) eps - sqrt(1 - a_t) z0 for v-prediction models), with an L2 loss.

Per-sample randomness (timestep, caption dropout, VAE posterior sample, noise) comes from a
generator seeded by (seed, sample position): see `data/order.py` for why.

`compute_loss(batch, adapter, frozen, ...)` is the loss of one `TrainingBatch`: it encodes the
pixels and captions, or takes the cached posterior and embeddings when the batch carries them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from t2i_adapter.errors import ModelMismatchError, T2IAdapterError
from t2i_adapter.generation.prompts import encode_prompt
from t2i_adapter.generation.vae import encode_posterior
from t2i_adapter.training.data.batches import TrainingBatch
from t2i_adapter.training.data.order import mix_seed

PREDICTION_TYPES = ("epsilon", "v_prediction")


def sample_timesteps(u: torch.Tensor, num_train_timesteps: int, method: str) -> torch.Tensor:
    """Timesteps from uniform draws `u` in [0, 1): `uniform`, or `cubic` t = (1 - u^3) T (SDXL recipe)."""
    if method == "cubic":
        # Cubic sampling favours large t (early, noisy steps), where the layout is decided.
        t = (1.0 - u**3) * num_train_timesteps
    elif method == "uniform":
        t = u * num_train_timesteps
    else:
        raise ValueError(f"unknown timestep sampling '{method}'")
    return t.long().clamp(0, num_train_timesteps - 1)


@dataclass
class SampleDraws:
    """Everything random about one micro-batch, drawn per sample."""

    timestep_u: torch.Tensor  # (B,) in [0, 1)
    dropout_u: torch.Tensor  # (B,) in [0, 1)
    posterior_eps: torch.Tensor  # (B, 4, h, w): VAE posterior sample z = mean + std * eps
    noise: torch.Tensor  # (B, 4, h, w): the diffusion noise eps


def draw_for_samples(positions: list[int], seed: int, latent_shape: tuple[int, ...]) -> SampleDraws:
    """The random draws of the samples at `positions` (CPU generators: same numbers on any device)."""
    timestep_u, dropout_u, posterior_eps, noise = [], [], [], []
    for position in positions:
        generator = torch.Generator().manual_seed(mix_seed(seed, position, 2))
        timestep_u.append(torch.rand(1, generator=generator))
        dropout_u.append(torch.rand(1, generator=generator))
        posterior_eps.append(torch.randn(latent_shape, generator=generator))
        noise.append(torch.randn(latent_shape, generator=generator))
    return SampleDraws(
        timestep_u=torch.cat(timestep_u),
        dropout_u=torch.cat(dropout_u),
        posterior_eps=torch.stack(posterior_eps),
        noise=torch.stack(noise),
    )


def check_prediction_type(noise_scheduler) -> str:
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type not in PREDICTION_TYPES:
        raise ModelMismatchError(
            f"the base model predicts '{prediction_type}'; training supports {', '.join(PREDICTION_TYPES)}"
        )
    return prediction_type


def diffusion_target(noise_scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor):
    """What the UNet should predict: the noise (epsilon models) or the velocity (v-prediction models)."""
    if check_prediction_type(noise_scheduler) == "epsilon":
        return noise
    return noise_scheduler.get_velocity(latents, noise, timesteps)


def scale_latents(mean: torch.Tensor, std: torch.Tensor, eps: torch.Tensor, vae_config) -> torch.Tensor:
    """A posterior sample in the UNet's latent scale: (z - shift) * scaling_factor."""
    latents = mean + std * eps
    shift = getattr(vae_config, "shift_factor", None)
    if shift is not None:
        latents = latents - shift
    return latents * vae_config.scaling_factor


# ---------------------------------------------------------------------------------------------
# Pictures -> the VAE posterior (the loss, the latent cache and `data prepare --model`)
# ---------------------------------------------------------------------------------------------

NAMED_SAMPLES = 3  # how many of a batch's files an error names


class NonFiniteLatentsError(T2IAdapterError):
    """The VAE encoded pictures to NaN/inf latents (a half-precision overflow)."""


@torch.no_grad()
def encode_latents(
    base: Any, pixels: torch.Tensor, wheres: list[str | None] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (B, 4, R/8, R/8) of the VAE posterior of pixels (B, 3, R, R) in [-1, 1], cast
    to the UNet's dtype. The encoder runs in the dtype generation's rule picks (`generation.vae`:
    SDXL's fp16 VAE in fp32, upcast once in place); non-finite latents stop with
    `NonFiniteLatentsError` naming `wheres` (the samples' files) rather than train on NaN."""
    vae = base.vae
    posterior = encode_posterior(vae, pixels.to(vae.device), is_sdxl=base.is_sdxl)
    mean, std = posterior.mean.to(base.dtype), posterior.std.to(base.dtype)
    if not bool(torch.isfinite(mean).all() & torch.isfinite(std).all()):  # one device sync
        raise NonFiniteLatentsError(_non_finite_message(posterior.mean.dtype, base.dtype, wheres))
    return mean, std


def _non_finite_message(
    encoded_in: torch.dtype, cast_to: torch.dtype, wheres: list[str | None] | None
) -> str:
    named = [where for where in wheres or [] if where]
    samples = ", ".join(named[:NAMED_SAMPLES]) if named else "a batch"
    if len(named) > NAMED_SAMPLES:
        samples += f" and {len(named) - NAMED_SAMPLES} more"
    dtypes = str(encoded_in).removeprefix("torch.")
    if cast_to != encoded_in:
        dtypes += f", cast to {str(cast_to).removeprefix('torch.')}"
    return (
        f"the VAE encoded {samples} to NaN/inf latents ({dtypes}): encode in bf16 or fp32 (train "
        "--mixed-precision bf16 or no; data prepare --dtype bfloat16 or float32), or use a VAE made "
        "for fp16 (madebyollin/sdxl-vae-fp16-fix) as the model's vae folder"
    )


# ---------------------------------------------------------------------------------------------
# The loss of one micro-batch
# ---------------------------------------------------------------------------------------------


@dataclass
class FrozenParts:
    """What the loss needs from the frozen base model (the encoders are None once latents are cached)."""

    base: Any  # BaseModel; its vae / text encoders may have been freed
    vae_config: Any
    is_sdxl: bool
    weight_dtype: torch.dtype
    empty_embeds: torch.Tensor | None = None  # (77, D) cached empty caption, for caption dropout
    empty_pooled: torch.Tensor | None = None  # (P,) its SDXL pooled embedding
    train_unet: Any = None  # with --compile: the compiled UNet the loss calls (else base.unet)

    @property
    def unet(self) -> Any:
        """The UNet the loss calls: compiled with --compile, else the base model's."""
        return self.train_unet if self.train_unet is not None else self.base.unet


def _latent_posterior(batch: TrainingBatch, frozen: FrozenParts) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (B, 4, R/8, R/8) of the VAE posterior: cached, or encoded from the pixels now."""
    dtype = frozen.weight_dtype
    if batch.latent_mean is not None:
        return batch.latent_mean.to(dtype), batch.latent_std.to(dtype)
    mean, std = encode_latents(frozen.base, batch.pixels, batch.wheres)
    return mean.to(dtype), std.to(dtype)


def _text_conditioning(batch: TrainingBatch, frozen: FrozenParts, dropped: torch.Tensor):
    """Caption embeddings (B, 77, D) and SDXL pooled (B, P); dropped captions become the empty one."""
    if batch.embeds is not None:  # cached
        device = batch.embeds.device
        keep = (~dropped).to(device)[:, None, None]
        embeds = torch.where(keep, batch.embeds, frozen.empty_embeds.to(device))
        pooled = None
        if frozen.is_sdxl:
            pooled = torch.where(keep[:, :, 0], batch.pooled, frozen.empty_pooled.to(device))
        return embeds.to(frozen.weight_dtype), pooled
    captions = [
        "" if drop else caption for caption, drop in zip(batch.captions, dropped.tolist(), strict=True)
    ]
    prompts = encode_prompt(frozen.base, captions, do_cfg=False)
    return prompts.embeds, prompts.pooled


def compute_loss(
    batch: TrainingBatch,
    adapter: torch.nn.Module,
    frozen: FrozenParts,
    noise_scheduler,
    *,
    seed: int,
    timestep_sampling: str,
    caption_dropout: float,
    device: torch.device,
) -> torch.Tensor:
    """L2 between the UNet's prediction (with the adapter's features) and the diffusion target (eq. 6)."""
    batch = batch.to(device)
    dtype = frozen.weight_dtype
    mean, std = _latent_posterior(batch, frozen)  # (B, 4, R/8, R/8)
    draws = draw_for_samples(batch.positions, seed, tuple(mean.shape[1:]))
    latents = scale_latents(mean, std, draws.posterior_eps.to(device, dtype), frozen.vae_config)
    noise = draws.noise.to(device, dtype)
    timesteps = sample_timesteps(
        draws.timestep_u, noise_scheduler.config.num_train_timesteps, timestep_sampling
    ).to(device)
    noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)

    embeds, pooled = _text_conditioning(batch, frozen, draws.dropout_u < caption_dropout)
    added_conditions = None
    if frozen.is_sdxl:
        added_conditions = {"text_embeds": pooled.to(dtype), "time_ids": batch.time_ids.to(dtype)}

    features = adapter(batch.conditions)  # list of (B, C_i, H_i, W_i)
    prediction = frozen.unet(
        noisy_latents,
        timesteps,
        encoder_hidden_states=embeds.to(dtype),
        added_cond_kwargs=added_conditions,
        down_intrablock_additional_residuals=[feature.to(dtype) for feature in features],
    ).sample
    target = diffusion_target(noise_scheduler, latents, noise, timesteps)
    return F.mse_loss(prediction.float(), target.float())
