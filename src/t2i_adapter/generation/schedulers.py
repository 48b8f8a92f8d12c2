"""Schedulers by name: short names users know (`ddim`, `euler_a`, `dpm++_2m_karras`, ...) or any
diffusers scheduler class that works with Stable Diffusion's noise schedule (the base
scheduler's `compatibles`). Each generation gets a fresh scheduler built from the model's own
scheduler config, so concurrent generations never share step state.

Few-step LoRAs come with their samplers: `lcm` (LCM-LoRA), `tcd` (TCD, Hyper-SD's one-step
LoRA; its `eta` is TCD's gamma), `ddim_trailing` / `euler_trailing` (Hyper-SD's N-step and
SDXL-Lightning LoRAs: the schedule starts at the last training timestep). See
docs/workflows.md, "Few-step sampling"."""

from __future__ import annotations

from typing import Any

import diffusers
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers

from t2i_adapter.errors import T2IAdapterError, UnknownNameError

# short name -> (diffusers class name, config overrides)
SCHEDULER_ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "plms": ("PNDMScheduler", {"skip_prk_steps": True}),
    "lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm2": ("KDPM2DiscreteScheduler", {}),
    "dpm2_a": ("KDPM2AncestralDiscreteScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {}),
    "dpm++_2m": ("DPMSolverMultistepScheduler", {}),
    "dpm++_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "dpm++_2s": ("DPMSolverSinglestepScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
    "tcd": ("TCDScheduler", {}),
    "ddim_trailing": ("DDIMScheduler", {"timestep_spacing": "trailing"}),
    "euler_trailing": ("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
}


# diffusers classes that sample Stable Diffusion's noise schedule: diffusers' own list of them
# and the classes behind the short names. Others (flow matching, Amused, ...) fail mid-run, so
# they are refused by name before any model loads.
SD_SCHEDULER_CLASSES = frozenset(
    [member.name for member in KarrasDiffusionSchedulers]
    + [class_name for class_name, _ in SCHEDULER_ALIASES.values()]
)


def check_scheduler_name(name: str) -> None:
    """Refuse a scheduler name no Stable Diffusion model can use (no model needed)."""
    key = name.strip()
    if key.lower() not in SCHEDULER_ALIASES and key not in SD_SCHEDULER_CLASSES:
        raise UnknownNameError("scheduler", name, list(SCHEDULER_ALIASES) + sorted(SD_SCHEDULER_CLASSES))


def _compatible_classes(base_scheduler) -> dict[str, type]:
    classes = {cls.__name__: cls for cls in getattr(base_scheduler, "compatibles", [])}
    classes[type(base_scheduler).__name__] = type(base_scheduler)
    return classes


def available_schedulers(base_scheduler=None) -> list[str]:
    """Short names plus, given a model's scheduler, the diffusers class names compatible with it."""
    names = list(SCHEDULER_ALIASES)
    if base_scheduler is not None:
        names += sorted(_compatible_classes(base_scheduler))
    return names


def make_scheduler(name: str, base_scheduler):
    """A new scheduler named `name`, configured from `base_scheduler`'s config (the model's schedule)."""
    classes = _compatible_classes(base_scheduler)
    key = name.strip()
    class_name, overrides = SCHEDULER_ALIASES.get(key.lower(), (key, {}))
    scheduler_class = classes.get(class_name)
    if scheduler_class is None:
        candidate = getattr(diffusers, class_name, None)
        if candidate is None or class_name not in SD_SCHEDULER_CLASSES:
            raise UnknownNameError("scheduler", name, available_schedulers(base_scheduler))
        scheduler_class = candidate
    return scheduler_class.from_config(base_scheduler.config, **overrides)


def set_steps(scheduler, steps: int, device=None) -> None:
    """`scheduler.set_timesteps(steps)`, with the one limit a scheduler may have as one line: LCM
    and TCD pick their steps among `original_inference_steps` (50) and take no more than that."""
    limit = scheduler.config.get("original_inference_steps")
    if limit is not None and steps > limit:
        raise T2IAdapterError(
            f"the {type(scheduler).__name__} takes at most {limit} steps (its original_inference_steps), "
            f"not {steps}; few-step schedulers are meant for 2-8"
        )
    scheduler.set_timesteps(steps, device=device)
