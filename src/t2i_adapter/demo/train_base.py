"""Train the demo base model from scratch on the shapes world: first the VAE, then UNet + text encoder.

Stage 1 fits the `AutoencoderKL` (L1 + MSE reconstruction and a small KL term) and sets its
`scaling_factor` so the latents have unit variance, as SD does. Stage 2 encodes a fixed set of
scenes once (latent mean and std kept, a fresh latent sample drawn each step) and trains the
UNet and the text encoder together with the DDPM loss (Ho et al., 2020) in v-prediction form
(Salimans & Ho, 2022; the scheduler's `prediction_type` says which), weighted by min-SNR-5
(Hang et al., 2023) for faster convergence, with 10 % empty captions so classifier-free guidance
works, and an exponential moving average of the weights, which is what gets saved. Losses go to
`losses.jsonl` beside the model.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from t2i_adapter.demo.tiny_model import TinyModel, TinyModelConfig, build_tiny_model, save_tiny_model
from t2i_adapter.demo.world import make_scene
from t2i_adapter.devices import resolve_device
from t2i_adapter.training.objective import diffusion_target

# Seeds of training scenes start here; evaluation scenes use small seeds, so they never overlap.
TRAIN_SEED_OFFSET = 1_000_000


@dataclass
class BaseTrainingConfig:
    """Steps, batch sizes and learning rates of both stages (defaults: the shipped model)."""

    vae_steps: int = 800
    vae_batch_size: int = 16
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-7  # 1e-5 left a posterior std as large as the latents
    unet_steps: int = 8000
    unet_batch_size: int = 32
    unet_lr: float = 1e-3
    unet_train_scenes: int = 16000
    caption_dropout: float = 0.1
    ema_decay: float = 0.998
    min_snr_gamma: float = 5.0
    timestep_sampling: str = "uniform"  # or "cubic": t = (1 - u^3) T, more of the noisy steps
    warmup_steps: int = 200
    max_minutes: float | None = 60.0  # stop each stage early when its share of this runs out
    seed: int = 0
    log_every: int = 50
    device: str = "auto"  # "auto": the GPU when there is one, else the CPU

    def torch_device(self) -> torch.device:
        return resolve_device(self.device)


def scenes_to_tensor(seeds: list[int]) -> tuple[torch.Tensor, list[str]]:
    """Pictures as (N, 3, 64, 64) in [-1, 1] and their captions."""
    scenes = [make_scene(seed) for seed in seeds]
    pixels = np.stack([np.asarray(scene.image(), dtype=np.float32) for scene in scenes])
    tensor = torch.from_numpy(pixels).permute(0, 3, 1, 2) / 127.5 - 1.0  # (N, 3, H, W)
    return tensor, [scene.caption for scene in scenes]


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup, then cosine decay to 10 %."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class LossLog:
    """Appends `{"stage", "step", "loss", "seconds"}` lines to a JSONL file and prints them."""

    def __init__(self, path: Path, echo: Callable[[str], None] | None = print):
        self.path = path
        self.echo = echo
        self.start = time.time()
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, stage: str, step: int, loss: float, **extra: float) -> None:
        record = {
            "stage": stage,
            "step": step,
            "loss": round(loss, 6),
            "seconds": round(time.time() - self.start, 1),
        }
        record.update({key: round(value, 6) for key, value in extra.items()})
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.echo:
            self.echo(json.dumps(record))


# ---------------------------------------------------------------------------------------------
# Stage 1: VAE
# ---------------------------------------------------------------------------------------------


def train_vae(model: TinyModel, config: BaseTrainingConfig, log: LossLog, deadline: float | None) -> None:
    vae = model.vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    generator = np.random.default_rng(config.seed)
    running = 0.0
    for step in range(config.vae_steps):
        for group in optimizer.param_groups:
            group["lr"] = config.vae_lr * _lr_factor(step, config.vae_steps, config.warmup_steps)
        seeds = (TRAIN_SEED_OFFSET + generator.integers(0, 10**8, config.vae_batch_size)).tolist()
        pixels = scenes_to_tensor(seeds)[0].to(vae.device)  # (B, 3, 64, 64)
        posterior = vae.encode(pixels).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        rec_loss = F.l1_loss(reconstruction, pixels) + F.mse_loss(reconstruction, pixels)
        loss = rec_loss + config.vae_kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        running += rec_loss.item()
        if (step + 1) % config.log_every == 0:
            log.write("vae", step + 1, running / config.log_every)
            running = 0.0
        if deadline is not None and time.time() > deadline:
            log.write("vae", step + 1, rec_loss.item(), stopped_early=1.0)
            break
    vae.eval()


@torch.no_grad()
def set_vae_scaling_factor(model: TinyModel, num_scenes: int = 512) -> float:
    """`scaling_factor = 1 / std(latents)` over fresh scenes, as SD's 0.18215 was chosen."""
    pixels, _ = scenes_to_tensor(list(range(TRAIN_SEED_OFFSET // 2, TRAIN_SEED_OFFSET // 2 + num_scenes)))
    latents = model.vae.encode(pixels.to(model.vae.device)).latent_dist.mean
    factor = float(1.0 / latents.std())
    model.vae.register_to_config(scaling_factor=factor)
    return factor


# ---------------------------------------------------------------------------------------------
# Stage 2: UNet + text encoder
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def encode_training_set(model: TinyModel, count: int, batch_size: int = 256):
    """Latent means and stds (unscaled, on the CPU) of `count` training scenes, and their captions."""
    means, stds, captions = [], [], []
    for start in range(0, count, batch_size):
        seeds = list(range(TRAIN_SEED_OFFSET + start, TRAIN_SEED_OFFSET + min(count, start + batch_size)))
        pixels, batch_captions = scenes_to_tensor(seeds)
        posterior = model.vae.encode(pixels.to(model.vae.device)).latent_dist
        means.append(posterior.mean.cpu())
        stds.append(posterior.std.cpu())
        captions += batch_captions
    return torch.cat(means), torch.cat(stds), captions


def tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(
        captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def _sample_timesteps(method: str, count: int, total: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform timesteps, or cubic t = (1 - u^3) T, which favours the noisy steps that decide layout."""
    u = torch.rand(count, generator=generator)
    if method == "cubic":
        u = 1 - u**3
    return (u * total).long().clamp(0, total - 1)


def train_unet(model: TinyModel, config: BaseTrainingConfig, log: LossLog, deadline: float | None) -> None:
    means, stds, captions = encode_training_set(model, config.unet_train_scenes)
    scale = model.vae.config.scaling_factor
    all_ids = tokenize(model.tokenizer, captions)
    empty_ids = tokenize(model.tokenizer, [""])
    unet, text_encoder = model.unet.train(), model.text_encoder.train()
    device = unet.device
    parameters = list(unet.parameters()) + list(text_encoder.parameters())
    ema = [p.detach().clone() for p in parameters]
    optimizer = torch.optim.AdamW(parameters, lr=config.unet_lr, weight_decay=1e-2)
    alphas_cumprod = model.scheduler.alphas_cumprod  # (T,)
    generator = torch.Generator().manual_seed(config.seed)
    running = 0.0
    for step in range(config.unet_steps):
        for group in optimizer.param_groups:
            group["lr"] = config.unet_lr * _lr_factor(step, config.unet_steps, config.warmup_steps)
        index = torch.randint(0, len(captions), (config.unet_batch_size,), generator=generator)
        latents = means[index] + stds[index] * torch.randn(means[index].shape, generator=generator)
        latents = latents * scale  # (B, 4, 16, 16)
        ids = all_ids[index].clone()
        dropped = torch.rand(len(index), generator=generator) < config.caption_dropout
        ids[dropped] = empty_ids
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = _sample_timesteps(config.timestep_sampling, len(index), len(alphas_cumprod), generator)
        alpha_bar = alphas_cumprod[timesteps].view(-1, 1, 1, 1)
        # Random numbers come from the CPU generator (the same run on any device), then move.
        latents, noise, ids, timesteps, alpha_bar = (
            tensor.to(device) for tensor in (latents, noise, ids, timesteps, alpha_bar)
        )
        noisy = alpha_bar.sqrt() * latents + (1 - alpha_bar).sqrt() * noise  # q(x_t | x_0), Eq. 4
        context = text_encoder(ids)[0]  # (B, L, D)
        predicted = unet(noisy, timesteps, context).sample
        snr = alpha_bar.view(-1) / (1 - alpha_bar.view(-1))
        target = diffusion_target(model.scheduler, latents, noise, timesteps)  # epsilon or v
        # min-SNR-gamma weights: min(SNR, gamma) / SNR for epsilon, min(SNR, gamma) / (SNR + 1) for v.
        denominator = snr + 1 if model.scheduler.config.prediction_type == "v_prediction" else snr
        weight = torch.clamp(snr, max=config.min_snr_gamma) / denominator
        per_sample = F.mse_loss(predicted, target, reduction="none").mean(dim=(1, 2, 3))
        loss = (weight * per_sample).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        decay = min(config.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for average, parameter in zip(ema, parameters, strict=True):
                average.lerp_(parameter.detach(), 1 - decay)
        running += per_sample.mean().item()
        if (step + 1) % config.log_every == 0:
            log.write("unet", step + 1, running / config.log_every)
            running = 0.0
        if deadline is not None and time.time() > deadline:
            log.write("unet", step + 1, per_sample.mean().item(), stopped_early=1.0)
            break
    with torch.no_grad():
        for average, parameter in zip(ema, parameters, strict=True):
            parameter.copy_(average)
    unet.eval()
    text_encoder.eval()


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def train_base_model(
    dest: str | Path,
    config: BaseTrainingConfig | None = None,
    model_config: TinyModelConfig | None = None,
    *,
    echo: Callable[[str], None] | None = print,
) -> Path:
    """Train the demo base model from nothing and write it as a diffusers folder at `dest`."""
    config = config or BaseTrainingConfig()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    log_path = dest / "losses.jsonl"
    log_path.unlink(missing_ok=True)
    log = LossLog(log_path, echo)
    torch.manual_seed(config.seed)
    model = build_tiny_model(model_config, seed=config.seed)
    device = config.torch_device()
    for network in (model.vae, model.unet, model.text_encoder):
        network.to(device)
    start = time.time()
    budget = None if config.max_minutes is None else config.max_minutes * 60
    # The VAE gets a quarter of the time budget, the UNet the rest.
    train_vae(model, config, log, None if budget is None else start + budget * 0.25)
    factor = set_vae_scaling_factor(model)
    log.write("vae_scaling_factor", 0, factor)
    save_tiny_model(model, dest / "model", half=False)  # a checkpoint after stage 1
    train_unet(model, config, log, None if budget is None else start + budget)
    save_tiny_model(model, dest / "model", half=False)
    (dest / "training_config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    return dest / "model"
