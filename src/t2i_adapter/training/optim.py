"""AdamW (8-bit through bitsandbytes when available) and the learning-rate schedule.

The default schedule, constant after a linear warmup, does not depend on `max_steps`, so a run
extended with `--resume --max-steps N` follows exactly the schedule a longer run would have.
(`linear`, `cosine`, ... do depend on it: changing `max_steps` on resume changes their shape.)
"""

from __future__ import annotations

import importlib.util

import torch
from diffusers.optimization import get_scheduler

from t2i_adapter.errors import T2IAdapterError


def choose_optimizer(name: str, device: torch.device) -> str:
    """`auto` -> `adamw8bit` on CUDA when bitsandbytes is installed, else `adamw`."""
    if name != "auto":
        return name
    has_bitsandbytes = importlib.util.find_spec("bitsandbytes") is not None
    return "adamw8bit" if device.type == "cuda" and has_bitsandbytes else "adamw"


def make_optimizer(parameters, config, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over the adapter's parameters (Loshchilov & Hutter 2019), per the config."""
    kind = choose_optimizer(config.optimizer, device)
    options = {
        "lr": config.lr,
        "betas": (config.adam_beta1, config.adam_beta2),
        "eps": config.adam_epsilon,
        "weight_decay": config.weight_decay,
    }
    if kind == "adamw8bit":
        try:
            import bitsandbytes  # optional: only for --optimizer adamw8bit
        except ImportError:
            raise T2IAdapterError(
                "optimizer 'adamw8bit' needs bitsandbytes (pip install bitsandbytes)"
            ) from None
        return bitsandbytes.optim.AdamW8bit(parameters, **options)
    return torch.optim.AdamW(parameters, **options)


def make_lr_scheduler(optimizer: torch.optim.Optimizer, config):
    """diffusers' schedules (warmup, then constant / linear / cosine / ...)."""
    return get_scheduler(
        config.lr_scheduler,
        optimizer,
        num_warmup_steps=config.lr_warmup_steps,
        num_training_steps=config.max_steps,
    )
