"""A faster training step: `--compile` and `--gradient-checkpointing auto|on|off`.

`--compile` runs the frozen UNet and the adapter through `torch.compile` (inductor, default mode:
CUDA graphs would pin a training step's changing buffers); where compile cannot run
(`devices.compile_supported`: MPS, a CPU without a C++ compiler, CUDA without Triton) training
goes on eagerly after one warning line.

Gradient checkpointing recomputes the UNet's activations in the backward pass: less memory, but
a slower step (docs/benchmarks.md, "Gradient checkpointing": about a third of the step on a
GPU). `auto` keeps it off unless the step would not fit: on CUDA one forward and backward pass
at batch 1 is measured, scaled to the batch, and compared with the free memory; elsewhere (CPU,
MPS: the machine's RAM) it stays off.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import torch

from t2i_adapter.devices import compile_supported
from t2i_adapter.generation.base_model import vae_scale_factor

logger = logging.getLogger("t2i_adapter.training")

COMPILE_BACKEND = "inductor"  # tests swap in "eager" to exercise the plumbing without the codegen
MEMORY_MARGIN = 0.9  # use at most this share of the free memory (fragmentation, the allocator's slack)
TOKENS = 77  # the text encoders' context length


# ---------------------------------------------------------------------------------------------
# --compile
# ---------------------------------------------------------------------------------------------


def compile_for_training(frozen: Any, adapter: torch.nn.Module, device: torch.device) -> bool:
    """Compile the UNet the loss calls (`frozen.train_unet`; validation keeps the eager one) and the
    adapter in place (its weights and state-dict keys stay as they are). False: it runs eagerly."""
    supported, why = compile_supported(device)
    if not supported:
        logger.warning("--compile: %s; training runs eagerly", why)
        return False
    frozen.train_unet = torch.compile(frozen.base.unet, backend=COMPILE_BACKEND)
    adapter.compile(backend=COMPILE_BACKEND)
    logger.info("--compile: the UNet and the adapter compile on the first step (%s)", COMPILE_BACKEND)
    return True


# ---------------------------------------------------------------------------------------------
# --gradient-checkpointing auto|on|off
# ---------------------------------------------------------------------------------------------


def choose_gradient_checkpointing(
    setting: str, device: torch.device, *, needed: float | None = None, free: float | None = None
) -> tuple[bool, str]:
    """The rule: `on`/`off` as asked; `auto`: off, unless on CUDA the step's estimated memory
    `needed` (bytes) exceeds `MEMORY_MARGIN` of the `free` bytes. Returns (on, why)."""
    if setting in ("on", "off"):
        return setting == "on", f"{setting} (asked)"
    if device.type != "cuda":
        return (
            False,
            f"off (auto: on {device.type} the step's memory is the machine's RAM; it would only slow)",
        )
    assert needed is not None and free is not None, "auto on CUDA needs the measured step"
    shown = f"the step needs about {needed / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"
    if needed <= MEMORY_MARGIN * free:
        return False, f"off (auto: {shown})"
    return True, f"on (auto: {shown}; without it the batch would not fit)"


def set_gradient_checkpointing(
    setting: str, frozen: Any, adapter: torch.nn.Module, *, batch_size: int, resolution: int, device, autocast
) -> bool:
    """Decide (`choose_gradient_checkpointing`, measuring on CUDA), log the choice, apply it."""
    needed = free = None
    if setting == "auto" and device.type == "cuda":
        needed = estimate_step_bytes(frozen, adapter, batch_size, resolution, device, autocast)
        free = torch.cuda.mem_get_info(device)[0]
    on, why = choose_gradient_checkpointing(setting, device, needed=needed, free=free)
    logger.info("gradient checkpointing: %s", why)
    if on:
        frozen.base.unet.enable_gradient_checkpointing()
    return on


def estimate_step_bytes(
    frozen: Any, adapter: torch.nn.Module, batch_size: int, resolution: int, device, autocast: Callable
) -> float:
    """CUDA bytes a training step of `batch_size` would add: the peak of one forward and backward
    pass at batch 1 (activations grow with the batch; the fixed part makes it an overestimate)
    times the batch, plus the adapter's gradients and AdamW's two moments. Infinite when even
    batch 1 does not fit."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    try:
        probe_step(frozen, adapter, resolution, device, autocast)
        activations = torch.cuda.max_memory_allocated(device) - before
    except torch.cuda.OutOfMemoryError:
        activations = float("inf")
    finally:
        adapter.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
    trained = sum(p.numel() * p.element_size() for p in adapter.parameters() if p.requires_grad)
    return activations * batch_size + 3 * trained


def probe_step(frozen: Any, adapter: torch.nn.Module, resolution: int, device, autocast=None) -> None:
    """One forward and backward pass of the adapter and the UNet at batch 1 on made-up inputs of
    the training size (gradients land in the adapter; the caller clears them)."""
    unet = frozen.base.unet
    config, dtype = unet.config, frozen.weight_dtype
    generator = torch.Generator().manual_seed(0)  # its own numbers: the run's random state is untouched

    def made_up(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator).to(device, dtype)

    side = resolution // vae_scale_factor(frozen.vae_config)
    latents = made_up(1, config.in_channels, side, side)
    context = made_up(1, TOKENS, config.cross_attention_dim)
    added = None
    if getattr(config, "addition_embed_type", None) == "text_time":  # SDXL: pooled text + 6 time ids
        pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        time_ids = torch.full((1, 6), float(resolution), device=device, dtype=dtype)
        added = {"text_embeds": made_up(1, pooled), "time_ids": time_ids}
    condition = made_up(1, adapter.in_condition_channels, resolution, resolution).float().sigmoid()
    timestep = torch.tensor([500], device=device)
    with autocast() if autocast is not None else contextlib.nullcontext():
        features = adapter(condition)
        prediction = unet(
            latents,
            timestep,
            encoder_hidden_states=context,
            added_cond_kwargs=added,
            down_intrablock_additional_residuals=[feature.to(dtype) for feature in features],
        ).sample
        prediction.float().square().mean().backward()
