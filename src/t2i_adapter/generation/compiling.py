"""`--compile`: the UNet (and on CUDA the VAE decode) through `torch.compile`, kept with the pipeline.

On CUDA: mode "reduce-overhead" (CUDA graphs), channels-last weights and fused QKV projections
(diffusers' `fuse_qkv_projections`); elsewhere the default mode. LoRAs are fused into its weights
(`lora_fusion`), so choosing other LoRAs or scales does not recompile it. Where compile cannot
work (MPS, a CPU without a C++ compiler, no Triton on CUDA) `compile_unsupported` says why and
the pipeline runs eagerly after one warning line. `CompiledUNet` times the first call of each new
input shape (that call compiles) so the progress line and the timings can show it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from t2i_adapter.devices import compile_supported

logger = logging.getLogger(__name__)

BACKEND = "inductor"  # a test swaps in a counting backend: real tracing and guards, no C++ codegen


def compile_unsupported(device: torch.device) -> str | None:
    """Why `torch.compile` cannot run on `device` here, or None when it can (`devices.compile_supported`)."""
    supported, why = compile_supported(device, BACKEND)
    return None if supported else why


def compile_mode(device: torch.device) -> str | None:
    """CUDA graphs on CUDA (one launch per step instead of hundreds); the default mode elsewhere."""
    return "reduce-overhead" if device.type == "cuda" else None


def prepare_unet(unet: Any, device: torch.device) -> None:
    """On CUDA: channels-last weights and fused QKV projections, where this diffusers offers them
    (LoRAs keep them: `lora_fusion` merges into `to_q`/`to_k`/`to_v` and recopies the fused ones)."""
    if device.type != "cuda":
        return
    unet.to(memory_format=torch.channels_last)
    if hasattr(unet, "fuse_qkv_projections"):
        try:
            unet.fuse_qkv_projections()
        except ValueError as error:  # added KV projections (some UNets) cannot be fused
            logger.info("QKV projections left unfused: %s", error)


def vae_compile_pays(device: torch.device) -> bool:
    """The VAE decodes once per image: worth compiling on CUDA, not worth minutes of CPU codegen."""
    return device.type == "cuda"


class CompiledUNet:
    """`torch.compile(unet)` called like the UNet; each new input shape's first call is timed.

    Outputs are cloned under CUDA graphs: the next replay overwrites them, and some schedulers
    (PNDM) keep the model output between steps.
    """

    def __init__(self, unet: Any, device: torch.device):
        self.unet = unet
        self.device = device
        self.mode = compile_mode(device)
        self.module = torch.compile(unet, mode=self.mode, backend=BACKEND)
        if BACKEND == "inductor" and _inductor_freezes():
            logger.warning("--compile: Inductor freezing is on: LoRAs chosen after compiling will not apply")
        self.shapes: dict[tuple, float] = {}  # input shapes seen -> seconds of their first call
        self.pending_seconds = 0.0  # compile time not yet reported (`take_compile_seconds`)

    def __call__(self, sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        key = _shape_key(sample, kwargs)
        if self.mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        if key in self.shapes:
            return self._cloned(self.module(sample, *args, **kwargs))
        started = time.perf_counter()
        output = self._cloned(self.module(sample, *args, **kwargs))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.shapes[key] = time.perf_counter() - started
        self.pending_seconds += self.shapes[key]
        return output

    def _cloned(self, output: Any) -> Any:
        if self.mode != "reduce-overhead":
            return output
        return tuple(item.clone() if isinstance(item, torch.Tensor) else item for item in output)

    def take_compile_seconds(self) -> float:
        """Seconds spent in first calls (compiling) since the last time this was asked."""
        seconds, self.pending_seconds = self.pending_seconds, 0.0
        return seconds


def compile_vae_decode(vae: Any) -> Any:
    """`latents -> image` through a compiled `vae.decode` (default mode: it runs once per image)."""

    def decode(latents: torch.Tensor) -> torch.Tensor:
        return vae.decode(latents, return_dict=False)[0]

    return torch.compile(decode, backend=BACKEND)


def _inductor_freezes() -> bool:
    """Inductor's `freezing` (TORCHINDUCTOR_FREEZING=1) bakes the weights in as constants, so weights
    changed after compiling (`lora_fusion` merging LoRAs in place) would be ignored."""
    from torch._inductor import config

    return bool(config.freezing)


def _shape_key(sample: torch.Tensor, kwargs: dict[str, Any]) -> tuple:
    """The shapes a graph depends on: latents, text context (style tokens lengthen it), residuals."""
    context = kwargs.get("encoder_hidden_states")
    residuals = kwargs.get("down_intrablock_additional_residuals")
    return (
        tuple(sample.shape),
        None if context is None else tuple(context.shape),
        None if residuals is None else tuple(tuple(level.shape) for level in residuals),
    )
