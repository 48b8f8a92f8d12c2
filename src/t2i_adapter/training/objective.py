"""The diffusion training objective for an adapter (Mou et al. 2023, eq. 6; Ho et al. 2020, eq. 14).

A clean latent z0 is noised to z_t = sqrt(a_t) z0 + sqrt(1 - a_t) eps at a random timestep t;
the frozen UNet, helped by the adapter's features, predicts the target the base model was trained
for (eps, or v = sqrt(a_t) eps - sqrt(1 - a_t) z0 for v-prediction models), with an L2 loss.

Per-sample randomness (timestep, caption dropout, VAE posterior sample, noise) comes from a
generator seeded by (seed, sample position): see `data/order.py` for why.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from t2i_adapter.errors import ModelMismatchError
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
