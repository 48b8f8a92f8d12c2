"""The denoising loop: any diffusers scheduler, classifier-free guidance, adapter features.

Written out in full so it can be read top to bottom; the adapter part is only which features
(`down_intrablock_additional_residuals`) and which context the UNet sees at each step.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from t2i_adapter.errors import T2IAdapterError
from t2i_adapter.generation.img2img import LatentInpaint
from t2i_adapter.generation.units import StepConditioning


def step_kwargs(scheduler, generator: torch.Generator | None, eta: float | None = None) -> dict[str, Any]:
    """The optional arguments this scheduler's `step` accepts (DDIM's eta, TCD's gamma, noise).

    `eta=None` leaves the scheduler's own default (DDIM 0, TCD 0.3); an eta given to a scheduler
    whose step has none is refused rather than silently ignored.
    """
    accepted = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if eta is not None:
        if "eta" not in accepted:
            raise T2IAdapterError(
                f"eta applies to schedulers whose step takes it (ddim, tcd, ...), not {type(scheduler).__name__}"
            )
        kwargs["eta"] = eta
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


@torch.no_grad()
def denoise(
    unet,
    scheduler,
    latents: torch.Tensor,
    conditioning: StepConditioning,
    *,
    guidance_scale: float,
    generator: torch.Generator | None = None,
    eta: float | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    start: int = 0,
    inpaint: LatentInpaint | None = None,
) -> torch.Tensor:
    """Run the scheduler's timesteps from `start` on, from noisy `latents` (B, 4, h, w) to clean ones.

    Classifier-free guidance (Ho & Salimans 2022): eps = eps_uncond + s * (eps_cond - eps_uncond),
    both halves in one UNet batch. `scheduler.set_timesteps` must have been called.
    `start` > 0 (img2img): the first steps are skipped; the adapters' windows still count on the
    whole schedule. `inpaint`: the mask's extra UNet input, or its latent blending after each step.
    After each step `callback(info)` gets `step` (steps completed, 1..total), `total` (the steps
    this call runs), `timestep`, `latents` and `adapters_active`: the one progress shape of the package.
    """
    do_cfg = conditioning.do_cfg
    timesteps = scheduler.timesteps
    total = len(timesteps)
    extra = step_kwargs(scheduler, generator, eta)
    for i in range(start, total):
        t = timesteps[i]
        inputs = conditioning.at(i, total)

        model_input = torch.cat([latents] * 2) if do_cfg else latents  # (2B, 4, h, w)
        model_input = scheduler.scale_model_input(model_input, t)
        if inpaint is not None:
            model_input = inpaint.unet_input(model_input)  # 9-channel UNet: + mask, masked picture

        noise_pred = unet(
            model_input,
            t,
            encoder_hidden_states=inputs.context,
            added_cond_kwargs=inputs.added_cond,
            # a fresh list: the UNet pops the levels off it as it goes down
            down_intrablock_additional_residuals=None if inputs.residuals is None else list(inputs.residuals),
            return_dict=False,
        )[0]

        if do_cfg:
            noise_uncond, noise_cond = noise_pred.chunk(2)
            noise_pred = noise_uncond + guidance_scale * (noise_cond - noise_uncond)

        latents = scheduler.step(noise_pred, t, latents, **extra, return_dict=False)[0]
        if inpaint is not None:
            latents = inpaint.after_step(latents, scheduler, i)  # 4-channel UNet: the kept region back

        if callback is not None:
            callback(
                {
                    "step": i + 1 - start,  # steps completed, so the last report is total/total
                    "total": total - start,
                    "timestep": t,
                    "latents": latents,
                    "adapters_active": inputs.active,
                }
            )
    return latents
