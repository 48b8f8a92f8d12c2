"""The VAE's precision rule, one place for generation and training.

A VAE half (the encoder or the decoder, each with its 1x1 convolution) runs in the dtype it is
stored in, except SDXL's fp16 VAE, known to overflow in fp16 (NaN/inf latents and pictures): that
half runs in fp32, cast once in place on first use and kept so (no copy and no move per call).
A VAE whose config says `force_upcast: false` (madebyollin/sdxl-vae-fp16-fix) runs in its own
dtype. The pipeline's encode and decode and the trainer's encode (loss, latent cache, `data
prepare --model`) all go through here.
"""

from __future__ import annotations

from typing import Any

import torch

# each half of the VAE with its 1x1 convolution: encoder -> quant_conv, post_quant_conv -> decoder
VAE_HALVES = {"encoder": ("encoder", "quant_conv"), "decoder": ("decoder", "post_quant_conv")}


def vae_compute_dtype(vae_dtype: torch.dtype, *, is_sdxl: bool, force_upcast: bool | None) -> torch.dtype:
    """The dtype to run a VAE half (encoder or decoder) in: its own, except SDXL's fp16 VAE,
    known to overflow: fp32.

    diffusers' `force_upcast` defaults to true for every VAE, so alone it says nothing (SD1.5's
    VAE is fine in fp16); like diffusers, only the SDXL family upcasts. bf16 has fp32's range.
    Any other overflow is caught after the decode (NaN/inf) and that decode is redone in fp32.
    """
    if vae_dtype == torch.float16 and is_sdxl and force_upcast:
        return torch.float32
    return vae_dtype


def half_modules(vae: Any, half: str) -> list[torch.nn.Module]:
    """The modules of `half` (`encoder` or `decoder`) of `vae`, its 1x1 convolution included."""
    modules = (getattr(vae, name, None) for name in VAE_HALVES[half])
    return [module for module in modules if module is not None]


def half_dtypes(vae: Any, half: str, *, is_sdxl: bool) -> tuple[torch.dtype, torch.dtype]:
    """(stored, run): the dtype `half` of `vae` is stored in, and the one it runs in."""
    stored = next(half_modules(vae, half)[0].parameters()).dtype
    force_upcast = vae.config.get("force_upcast")
    return stored, vae_compute_dtype(stored, is_sdxl=is_sdxl, force_upcast=force_upcast)


def cast_half(vae: Any, half: str, dtype: torch.dtype) -> Any:
    """Cast `half` (`encoder` or `decoder`, with its 1x1 convolution) of `vae` to `dtype` in place."""
    for module in half_modules(vae, half):
        module.to(dtype)
    return vae


def ready_half(vae: Any, half: str, *, is_sdxl: bool) -> torch.dtype:
    """The dtype `half` of `vae` runs in (`vae_compute_dtype`). A half that must run above its
    stored dtype (SDXL's fp16 VAE) is cast in place on first use and kept so: no copy and no
    move per call, and the same numbers as a transient fp32 copy. It holds its fp32 size from
    then on (SDXL: ~+70 MB encoder, ~+100 MB decoder), less than an fp32 copy beside the fp16
    one; a half never run stays as stored (no img2img: the encoder stays fp16)."""
    stored, run = half_dtypes(vae, half, is_sdxl=is_sdxl)
    if run != stored:
        cast_half(vae, half, run)
    return run


def encode_posterior(vae: Any, pixels: torch.Tensor, *, is_sdxl: bool):
    """Pictures (N, 3, H, W) in [-1, 1], on the VAE's device -> the VAE's latent distribution,
    computed in the dtype `ready_half` picks for the encoder. Autocast is off here: under the
    trainer's fp16 autocast an upcast encoder would run its convolutions in fp16 again (and
    cached latents, encoded outside autocast, would differ from uncached ones)."""
    dtype = ready_half(vae, "encoder", is_sdxl=is_sdxl)
    with torch.autocast(device_type=pixels.device.type, enabled=False):
        return vae.encode(pixels.to(dtype)).latent_dist
