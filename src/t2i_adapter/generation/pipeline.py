"""T2IAdapterPipeline: a frozen Stable Diffusion model steered by any number of adapters.

Order of work in one call (Mou et al. 2023, sec. 3): check every adapter fits the model, pick the
output size, run each adapter ONCE on its condition, encode the prompts, then denoise with the
adapters' features (weighted, summed, windowed per step) added to the UNet encoder, and decode.

Why not diffusers' `StableDiffusionAdapterPipeline` / `StableDiffusionXLAdapterPipeline`: they
give all adapters one step window (SD: every step; SDXL: the first `adapter_conditioning_factor`
of them), not a `[start, end)` window per adapter (the original `cond_tau`, generalised); they
have no style adapter tokens and no CoAdapter fuser; and they are two classes for SD and SDXL.
This one class does all of that over the same diffusers UNet, VAE, text encoders and schedulers.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import cpu_offload_with_hook
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from t2i_adapter.conditions.clip_vision import StyleImageEncoder, load_clip_vision
from t2i_adapter.conditions.style import DEFAULT_CLIP_VISION
from t2i_adapter.conditions.tensor import condition_to_tensor
from t2i_adapter.errors import ModelMismatchError, T2IAdapterError
from t2i_adapter.generation import compiling, lora_fusion
from t2i_adapter.generation.base_model import BaseModel
from t2i_adapter.generation.checks import (
    check_feature_shapes,
    check_fuser_fits,
    check_unit_fits,
)
from t2i_adapter.generation.img2img import (
    Box,
    HiresFix,
    ImageToImage,
    LatentInpaint,
    PreparedPicture,
    first_step,
    latent_mask,
    mask_tensor,
    paste_back,
    picture_tensor,
    prepare_picture,
    resample_pictures,
    upscaled_size,
)
from t2i_adapter.generation.prompts import check_time_ids_fit, encode_prompt, sdxl_add_time_ids
from t2i_adapter.generation.sampling import denoise
from t2i_adapter.generation.schedulers import make_scheduler, set_steps
from t2i_adapter.generation.settings import MAX_OUTPUT_PIXELS, MAX_SIDE
from t2i_adapter.generation.sizes import required_multiple, resolve_size
from t2i_adapter.generation.units import AdapterUnit, StepConditioning, UnitOutput, warn_idle_units
from t2i_adapter.generation.vae import cast_half, encode_posterior, half_dtypes, half_modules, ready_half

logger = logging.getLogger(__name__)
INPAINT_UNET_CHANNELS = 9  # latents + mask + masked picture's latents (SD/SDXL inpainting models)


@dataclass
class PipelineOutput:
    """Generated images (PIL list, or a float array (N, H, W, 3) in [0, 1] for `output_type="np"`).

    `width`/`height`: the first pass's size (what settings record, so a rerun repeats it);
    `output_width`/`output_height`: the images' size (larger after a hires fix; 0: not given)."""

    images: list[Image.Image] | np.ndarray | torch.Tensor
    width: int
    height: int
    conditions: list[torch.Tensor] = field(default_factory=list)  # adapter inputs, (1, C, H, W)
    timings: dict[str, float] = field(default_factory=dict)
    output_width: int = 0
    output_height: int = 0

    def __post_init__(self) -> None:
        self.output_width = self.output_width or self.width
        self.output_height = self.output_height or self.height


@dataclass
class _Request:
    """What every pass of one call shares (the first pass and the hires fix's)."""

    prompts: list[str]
    negative_prompts: list[str] | None
    units: list[AdapterUnit]
    fuser: torch.nn.Module | None
    num_images: int
    guidance_scale: float
    scheduler: str | Any | None
    generator: torch.Generator
    eta: float | None
    callback: Callable[[dict[str, Any]], None] | None
    adapter_seconds: float = 0.0
    steps_done: int = 0  # by the passes before this one: one progress over both passes
    steps_total: int = 0  # what every pass of the call runs together


@dataclass
class _Start:
    """How a pass starts: pure noise (`latents` None), or clean `latents` noised to the step
    `strength` selects; `mask` (1, 1, h, w) inpaints, `masked_latents` for a 9-channel UNet."""

    latents: torch.Tensor | None = None
    strength: float = 1.0
    mask: torch.Tensor | None = None
    masked_latents: torch.Tensor | None = None


class T2IAdapterPipeline:
    """Text-to-image with T2I-Adapters on SD1.x/2.x or SDXL; call it with a prompt and adapter units."""

    def __init__(
        self,
        base: BaseModel,
        *,
        style_encoder: StyleImageEncoder | None = None,
        clip_vision: str = DEFAULT_CLIP_VISION,
    ):
        self.base = base
        self.style_encoder = style_encoder  # None: `clip_vision`, loaded once per process
        self.clip_vision = clip_vision
        self.execution_device = base.device
        self._offload_hooks: list[Any] = []
        self._warned_vae_overflow = False
        self.compiled_unet: compiling.CompiledUNet | None = None  # set by `enable_compile`
        self._compiled_decode: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._compiled_sizes: set[tuple[int, int, int]] = set()  # (width, height, batch) compiled for
        self._compile_seconds = 0.0  # this call's compile time (first calls of new shapes)

    # ---------------------------------------------------------------- memory options
    def enable_attention_slicing(self, slice_size: str | int = "auto") -> None:
        """Compute attention in slices: less peak memory, a little slower."""
        self.base.unet.set_attention_slice(slice_size)

    def enable_vae_tiling(self) -> None:
        """Decode the latents in overlapping tiles, so large images fit in little memory."""
        self.base.vae.enable_tiling()

    def enable_model_cpu_offload(self, device: torch.device | str = "cuda") -> None:
        """Keep every model in CPU memory and move each to `device` only while it runs (accelerate)."""
        self.base.to("cpu")
        hook = None
        for module in (self.base.text_encoder, self.base.text_encoder_2, self.base.unet, self.base.vae):
            if module is not None:
                _, hook = cpu_offload_with_hook(module, device, prev_module_hook=hook)
                self._offload_hooks.append(hook)
        self.execution_device = torch.device(device)

    def enable_compile(self) -> bool:
        """`torch.compile` the UNet (and, where it pays, the VAE decode); the compiled modules stay
        with this pipeline, so only the first generation of each size pays for compiling.

        Where compile cannot run (MPS, a CPU without a C++ compiler) this says why in one warning
        line and the pipeline stays eager; returns whether it compiled.
        """
        if self.compiled_unet is not None:
            return True
        reason = compiling.compile_unsupported(self.execution_device)
        if reason is None and self._offload_hooks:
            reason = "not with model CPU offload"
        if reason is not None:
            logger.warning("--compile: %s; running eagerly", reason)
            return False
        with lora_fusion.FusedLoras.of(self.base.unet).plain():  # QKV fused from the plain layers
            compiling.prepare_unet(self.base.unet, self.execution_device)
        self.compiled_unet = compiling.CompiledUNet(self.base.unet, self.execution_device)
        if self._decode_compile_pays():
            self._compiled_decode = compiling.compile_vae_decode(self.base.vae)
        return True

    def _decode_compile_pays(self) -> bool:
        """On CUDA, untiled, and run in the decoder's own dtype: an upcast decode (SDXL's fp16
        VAE) stays eager, as it always was (its dtype changes once, on first use)."""
        vae = self.base.vae
        if not compiling.vae_compile_pays(self.execution_device) or getattr(vae, "use_tiling", False):
            return False
        stored, run = half_dtypes(vae, "decoder", is_sdxl=self.base.is_sdxl)
        return stored == run

    def _offload_all(self) -> None:
        for hook in self._offload_hooks:
            hook.offload()

    # ---------------------------------------------------------------- the call
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        units: Sequence[AdapterUnit] = (),
        *,
        negative_prompt: str | list[str] | None = None,
        steps: int = 50,
        guidance_scale: float = 7.5,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        num_images: int = 1,
        width: int | None = None,
        height: int | None = None,
        resize_short_edge: int | None = None,
        max_resolution: int | None = None,
        scheduler: str | Any | None = None,
        fuser: torch.nn.Module | None = None,
        img2img: ImageToImage | None = None,
        hires: HiresFix | None = None,
        eta: float | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
        output_type: str = "pil",
    ) -> PipelineOutput:
        """Generate `num_images` images per prompt, steered by `units`.

        Size: explicit `width`/`height`, else the init picture's size (img2img) or the first
        spatial condition's (scaled by `resize_short_edge` or to `max_resolution` pixels when
        given), rounded to what the UNet and every adapter need. `seed` (or `generator`) fixes
        the starting noise, drawn on the CPU so a seed gives the same noise on every device.
        `scheduler`: a name (`schedulers.make_scheduler`), a scheduler instance, or None for the
        model's own kind. `fuser`: a CoAdapter fuser mixing the active units (their `task` names
        the condition). `img2img`: rework a picture, or inpaint its masked part
        (`img2img.ImageToImage`); `hires`: upscale and repaint the result (`img2img.HiresFix`).
        `eta`: the scheduler's step noise (DDIM's eta, TCD's gamma); None: the scheduler's default.
        `callback(info)` gets `step` (steps completed, 1..total), `total`, `timestep`, `latents`,
        `adapters_active` after each step: one count over both passes of a hires fix (`total`:
        the first pass's steps plus the hires pass's). `output_type`: `pil`, `np` (float
        (N, H, W, 3) in [0, 1]), `pt` or `latent`. The output's `width`/`height` are the first
        pass's (what settings record); `output_width`/`output_height` the images' (hires: larger).
        Raises `ModelMismatchError` before any sampling when an adapter does not fit the model.
        """
        started = time.perf_counter()
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if isinstance(negative_prompt, str):
            negative_prompt = [negative_prompt] * len(prompts)
        if generator is None:
            generator = torch.Generator("cpu").manual_seed(int(seed if seed is not None else 42))
        request = _Request(
            prompts=prompts,
            negative_prompts=negative_prompt,
            units=list(units),
            fuser=fuser,
            num_images=num_images,
            guidance_scale=guidance_scale,
            scheduler=scheduler,
            generator=generator,
            eta=eta,
            callback=callback,
        )
        self._compile_seconds = 0.0  # this call's, both passes of a hires fix together

        self._check_fits(request.units, fuser, img2img)  # everything must fit before any sampling
        width, height = self._output_size(
            request.units,
            width,
            height,
            resize_short_edge=resize_short_edge,
            max_resolution=max_resolution,
            picture=None if img2img is None else img2img.image,
        )
        prepared = None if img2img is None else prepare_picture(img2img, width, height)
        start = self._picture_start(prepared, img2img)
        request.steps_total = self._steps_total(request, steps, start, hires)
        latents, conditions = self._pass(
            request, width, height, steps, start, crop=None if prepared is None else prepared.crop
        )
        if hires is not None:
            latents = self._hires_pass(request, latents, width, height, steps, hires)
        images = self._finish(latents, prepared, output_type)
        self._offload_all()
        _synchronize(self.execution_device)
        timings = {"adapter_seconds": request.adapter_seconds, "total_seconds": time.perf_counter() - started}
        if self.compiled_unet is not None:
            timings["compile_seconds"] = self._compile_seconds
        factor = self.base.vae_scale_factor
        return PipelineOutput(
            images=images,
            width=width,
            height=height,
            conditions=conditions,
            timings=timings,
            output_width=latents.shape[-1] * factor,
            output_height=latents.shape[-2] * factor,
        )

    def _steps_total(self, request: _Request, steps: int, start: _Start, hires: HiresFix | None) -> int:
        """The denoising steps the whole call runs: the first pass's plus the hires pass's."""
        passes = [(steps, start.strength)]
        if hires is not None:
            passes.append((hires.steps or steps, hires.strength))
        total = 0
        for pass_steps, strength in passes:
            scheduler = self._scheduler(request.scheduler, pass_steps)
            total += len(scheduler.timesteps) - first_step(scheduler, pass_steps, strength)
        return total

    def _pass(
        self,
        request: _Request,
        width: int,
        height: int,
        steps: int,
        start: _Start,
        *,
        crop: Box | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One denoising pass at (width, height): adapters, prompts, scheduler, starting latents,
        the loop. Returns the clean latents and the adapter inputs."""
        adapter_started = time.perf_counter()
        outputs, conditions = self._run_adapters(request.units, request.fuser, width, height, crop)
        request.adapter_seconds += time.perf_counter() - adapter_started
        conditioning = self._conditioning(
            request.units,
            outputs,
            request.fuser,
            request.prompts,
            request.negative_prompts,
            num_images=request.num_images,
            guidance_scale=request.guidance_scale,
            width=width,
            height=height,
        )
        scheduler = self._scheduler(request.scheduler, steps)
        conditioning.at(0, len(scheduler.timesteps))  # the fuser (if any) fails here, not mid-run
        warn_idle_units(request.units, len(scheduler.timesteps))
        latents, first, inpaint = self._start_latents(
            conditioning.batch_size, width, height, scheduler, steps, request.generator, start
        )
        with self._denoiser(conditioning, width, height) as unet:
            latents = denoise(
                unet,
                scheduler,
                latents,
                conditioning,
                guidance_scale=request.guidance_scale,
                generator=request.generator,
                eta=request.eta,
                callback=self._reporting_compile(_overall_progress(request)),
                start=first,
                inpaint=inpaint,
            )
        request.steps_done += len(scheduler.timesteps) - first
        return latents, conditions

    def _picture_start(self, prepared: PreparedPicture | None, img2img: ImageToImage | None) -> _Start:
        """How the first pass starts: from noise, or from the encoded (crop of the) init picture."""
        if prepared is None or img2img is None:
            return _Start()
        start = _Start(latents=self.encode(picture_tensor(prepared.work)), strength=img2img.strength)
        if prepared.work_mask is not None:
            latent_size = start.latents.shape[-2:]
            start.mask = latent_mask(prepared.work_mask, tuple(latent_size))
            if self.base.unet.config.in_channels == INPAINT_UNET_CHANNELS:
                pixel_mask = mask_tensor(prepared.work_mask)
                masked = picture_tensor(prepared.work) * (pixel_mask < 0.5)
                start.masked_latents = self.encode(masked)
                start.mask = F.interpolate(pixel_mask, size=tuple(latent_size))  # as diffusers does
        return start

    def _hires_pass(
        self, request: _Request, latents: torch.Tensor, width: int, height: int, steps: int, hires: HiresFix
    ) -> torch.Tensor:
        """Upscale the first pass's result (latents, or the picture through a resampler) and
        repaint it at the larger size: an img2img pass with the conditions resized to it."""
        multiple = self._multiple(request.units)
        new_width, new_height = upscaled_size(width, height, hires.scale, multiple)
        if max(new_width, new_height) > MAX_SIDE or new_width * new_height > MAX_OUTPUT_PIXELS:
            raise T2IAdapterError(
                f"--hires-scale {hires.scale:g}: {new_width}x{new_height} is over the size limit "
                f"({MAX_SIDE} per side, {MAX_OUTPUT_PIXELS} pixels)"
            )
        factor = self.base.vae_scale_factor
        if hires.upscaler == "latent":
            size = (new_height // factor, new_width // factor)
            clean = F.interpolate(latents.float(), size=size, mode="bilinear").to(latents.dtype)
        else:
            pictures = self.decode(latents, "pt")
            clean = self.encode(resample_pictures(pictures, (new_width, new_height), hires.upscaler))
        start = _Start(latents=clean, strength=hires.strength)
        latents, _ = self._pass(request, new_width, new_height, hires.steps or steps, start)
        return latents

    def _finish(self, latents: torch.Tensor, prepared: PreparedPicture | None, output_type: str):
        """Decode, paste the kept pixels back (inpainting), convert to `output_type`."""
        if output_type == "latent":
            return latents
        images = self.decode(latents, "pt")
        if prepared is not None:
            images = paste_back(images, prepared)
        return _converted(images, output_type)

    # ---------------------------------------------------------------- phases of a call
    def _check_fits(
        self, units: list[AdapterUnit], fuser: torch.nn.Module | None, img2img: ImageToImage | None = None
    ) -> None:
        """Raise `ModelMismatchError` when the model, an adapter or the fuser do not fit together,
        or an inpainting model (9-channel UNet) gets no mask."""
        in_channels = self.base.unet.config.in_channels
        if in_channels == INPAINT_UNET_CHANNELS and (img2img is None or img2img.mask is None):
            raise ModelMismatchError(
                "the base model is an inpainting model (its UNet takes 9 channels): give it an init "
                "picture and a mask (--init-image PIC --mask MASK)"
            )
        if self.base.is_sdxl:
            check_time_ids_fit(self.base)
        for unit in units:
            check_unit_fits(self.base, unit)
        if fuser is not None:
            check_fuser_fits(fuser, units)

    def _output_size(
        self,
        units: list[AdapterUnit],
        width: int | None,
        height: int | None,
        *,
        resize_short_edge: int | None,
        max_resolution: int | None,
        picture: Image.Image | None = None,
    ) -> tuple[int, int]:
        """(width, height), rounded to what the UNet and every spatial adapter need; the init
        `picture`'s size (img2img) stands for the first condition's."""
        spatial = [unit for unit in units if unit.is_spatial]
        size = picture.size if picture is not None else None
        if size is None and spatial:
            size = _condition_size(spatial[0].condition)
        return resolve_size(
            self._multiple(units),
            width=width,
            height=height,
            condition_size=size,
            resize_short_edge=resize_short_edge,
            max_resolution=max_resolution,
            default_side=self.base.native_resolution,
        )

    def _multiple(self, units: list[AdapterUnit]) -> int:
        """What both sides must be a multiple of, for the UNet and every spatial adapter."""
        return required_multiple(
            self.base.vae_scale_factor,
            len(self.base.unet.config.block_out_channels),
            [getattr(unit.adapter, "total_downscale_factor", 1) for unit in units if unit.is_spatial],
        )

    def _run_adapters(
        self,
        units: list[AdapterUnit],
        fuser: torch.nn.Module | None,
        width: int,
        height: int,
        crop: Box | None = None,
    ) -> tuple[list[UnitOutput], list[torch.Tensor]]:
        """Each adapter runs once per pass; its weighted output is reused at every step. `crop`
        (inpainting at full resolution): the conditions' region that is worked on."""
        device, dtype = self.execution_device, self.base.dtype
        latent_size = (height // self.base.vae_scale_factor, width // self.base.vae_scale_factor)
        outputs, conditions = [], []
        for unit in units:
            output, condition = self._run_unit(unit, width, height, device, dtype, crop)
            if output.maps is not None:
                check_feature_shapes(self.base, unit, output.maps, latent_size)
            outputs.append(output)
            conditions.append(condition)
        if fuser is not None:
            _move(fuser, device, dtype)
        _synchronize(device)
        return outputs, conditions

    def _conditioning(
        self,
        units: list[AdapterUnit],
        outputs: list[UnitOutput],
        fuser: torch.nn.Module | None,
        prompts: list[str],
        negative_prompts: list[str] | None,
        *,
        num_images: int,
        guidance_scale: float,
        width: int,
        height: int,
    ) -> StepConditioning:
        """Prompts -> context (negative half first), repeated for the images per prompt."""
        base, device, dtype = self.base, self.execution_device, self.base.dtype
        do_cfg = guidance_scale > 1.0
        embeddings = encode_prompt(base, prompts, negative_prompts=negative_prompts, do_cfg=do_cfg)
        embeddings = embeddings.repeat(num_images)
        added_cond = None
        if base.is_sdxl:
            time_ids = sdxl_add_time_ids(height, width, dtype=dtype, device=device)
            halves = 2 if do_cfg else 1
            added_cond = {
                "text_embeds": embeddings.pooled_context().to(device=device, dtype=dtype),
                "time_ids": time_ids.repeat(embeddings.batch_size * halves, 1),
            }
        return StepConditioning(
            units=units,
            outputs=outputs,
            text_context=embeddings.context().to(device=device, dtype=dtype),
            batch_size=embeddings.batch_size,
            do_cfg=do_cfg,
            fuser=fuser,
            added_cond=added_cond,
            fill_idle=self.compiled_unet is not None,  # one graph for every step
        )

    @contextlib.contextmanager
    def _denoiser(self, conditioning: StepConditioning, width: int, height: int) -> Iterator[Any]:
        """The UNet to sample with. Eager: the module itself, LoRAs as peft layers (unfused). Compiled
        (`fill_idle`: idle steps get zero residuals, one graph): the compiled one, with the chosen
        LoRAs fused into its weights and the peft layers out of its way (`lora_fusion`), so other
        LoRAs or scales recompile nothing. A size or batch it has not seen yet is said once: it
        recompiles."""
        unet = self.base.unet
        if self.compiled_unet is None:
            lora_fusion.restore_originals(unet)  # a compiled pipeline over the same UNet may have fused
            yield unet
            return
        size = (width, height, conditioning.batch_size)
        if size not in self._compiled_sizes:
            if self._compiled_sizes:
                logger.warning("new shape %dx%d (batch %d): recompiling the UNet", *size)
            self._compiled_sizes.add(size)
        fused = lora_fusion.FusedLoras.of(unet)
        fused.sync()
        with fused.plain():
            yield self.compiled_unet

    def _reporting_compile(
        self, callback: Callable[[dict[str, Any]], None] | None
    ) -> Callable[[dict[str, Any]], None] | None:
        """Adds `compile_seconds` to the step report after which compiling happened (first calls)."""
        compiled = self.compiled_unet
        if compiled is None:
            return callback

        def report(info: dict[str, Any]) -> None:
            seconds = compiled.take_compile_seconds()
            if seconds:
                self._compile_seconds += seconds
                info = {**info, "compile_seconds": seconds}
                logger.info("compiled the UNet in %.1f s (first call at this shape)", seconds)
            if callback is not None:
                callback(info)

        return report

    def _scheduler(self, scheduler: str | Any | None, steps: int) -> Any:
        """A fresh scheduler (no state shared between calls) set to `steps` steps."""
        if scheduler is None or isinstance(scheduler, str):
            scheduler = make_scheduler(scheduler or type(self.base.scheduler).__name__, self.base.scheduler)
        set_steps(scheduler, steps, self.execution_device)
        return scheduler

    def _start_latents(
        self,
        batch_size: int,
        width: int,
        height: int,
        scheduler: Any,
        steps: int,
        generator: torch.Generator,
        start: _Start,
    ) -> tuple[torch.Tensor, int, LatentInpaint | None]:
        """(starting latents, first step, inpainting) for one pass.

        The noise (batch, C, H/8, W/8) is drawn on the CPU so a seed gives the same noise
        everywhere, and first, so text-to-image and img2img at strength 1 draw the same. img2img
        noises the picture's latents with the scheduler's own `add_noise` at its first step.
        """
        base = self.base
        latent_shape = (
            batch_size,
            base.vae.config.latent_channels,
            height // base.vae_scale_factor,
            width // base.vae_scale_factor,
        )
        noise = randn_tensor(
            latent_shape, generator=generator, device=self.execution_device, dtype=base.dtype
        )
        if start.latents is None:
            return noise * scheduler.init_noise_sigma, 0, None
        first = first_step(scheduler, steps, start.strength)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(first)
        clean = _to_batch(start.latents.to(device=noise.device, dtype=noise.dtype), batch_size)
        if start.strength >= 1.0:  # diffusers' `is_strength_max`: pure noise, as text-to-image
            latents = noise * scheduler.init_noise_sigma
        else:
            latents = scheduler.add_noise(
                clean, noise, scheduler.timesteps[first : first + 1].repeat(batch_size)
            )
        if start.mask is None:
            return latents, first, None
        inpaint = LatentInpaint(
            mask=_to_batch(start.mask.to(noise.device, noise.dtype), batch_size),
            image_latents=clean,
            noise=noise,
            masked_latents=None
            if start.masked_latents is None
            else _to_batch(start.masked_latents.to(noise.device, noise.dtype), batch_size),
        )
        return latents, first, inpaint

    # ---------------------------------------------------------------- pieces
    def _run_unit(
        self,
        unit: AdapterUnit,
        width: int,
        height: int,
        device: torch.device,
        dtype: torch.dtype,
        crop: Box | None = None,
    ) -> tuple[UnitOutput, torch.Tensor]:
        """Run one adapter on its condition; returns its weighted output and the adapter input.

        The adapter keeps its own dtype (one being trained stays in fp32 beside an fp16 UNet):
        its input is cast to it, its output to the UNet's dtype.
        """
        adapter = _move(unit.adapter, device, None)
        adapter_dtype = _parameter_dtype(adapter, dtype)
        if unit.kind == "style":
            hidden_states = unit.condition
            if isinstance(hidden_states, Image.Image):
                hidden_states = self._style_encoder(device, dtype).encode(hidden_states)
            hidden_states = hidden_states.to(device=device, dtype=adapter_dtype)  # (1, 257, width)
            tokens = (adapter(hidden_states) * unit.weight).to(dtype)  # (1, T, D)
            return UnitOutput(tokens=tokens), hidden_states
        condition = _condition_tensor(unit, width, height, crop).to(
            device=device, dtype=adapter_dtype
        )  # (1, C, H, W)
        maps = [(feature * unit.weight).to(dtype) for feature in adapter(condition)]
        return UnitOutput(maps=maps), condition

    def _style_encoder(self, device: torch.device, dtype: torch.dtype) -> StyleImageEncoder:
        if self.style_encoder is not None:
            return self.style_encoder
        return load_clip_vision(self.clip_vision, device=device, dtype=dtype)

    def _decode_latents(self, vae: Any, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in [-1, 1], in the dtype the VAE rule picks (`vae.ready_half`:
        SDXL's fp16 decoder upcast once in place and kept); NaN/inf -> fp32 once."""
        dtype = ready_half(vae, "decoder", is_sdxl=self.base.is_sdxl)
        if self._compiled_decode is not None:  # only compiled for a decoder run in its own dtype
            image = self._compiled_decode(latents.to(dtype))
        else:
            image = vae.decode(latents.to(dtype), return_dict=False)[0]
        if dtype == torch.float32 or torch.isfinite(image).all():
            return image
        if not self._warned_vae_overflow:
            self._warned_vae_overflow = True
            logger.warning("the VAE decode overflowed in %s (NaN/inf): decoded again in float32", dtype)
        # A transient fp32 copy of the decoder (the encoder is shared, not copied): the VAE in
        # use is never moved, so a concurrent caller is not affected.
        shared = {id(module): module for module in half_modules(vae, "encoder")}
        fp32_vae = cast_half(copy.deepcopy(vae, shared), "decoder", torch.float32)
        return fp32_vae.decode(latents.to(torch.float32), return_dict=False)[0]

    def decode(self, latents: torch.Tensor, output_type: str = "pil"):
        """Latents -> images in [0, 1] (`np`: (N, H, W, 3) float array, `pt`: tensor, `pil`: images)."""
        if output_type == "latent":
            return latents
        vae = self.base.vae
        latents = 1 / vae.config.scaling_factor * latents
        shift = getattr(vae.config, "shift_factor", None)
        if shift:
            latents = latents + shift
        image = self._decode_latents(vae, latents)
        return _converted((image / 2 + 0.5).clamp(0, 1), output_type)  # (N, 3, H, W)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pictures (N, 3, H, W) in [-1, 1] -> scaled latents (the distribution's mode: no
        randomness drawn, so a seed's noise is the same as text-to-image's). The encoder runs in
        the dtype the VAE rule picks (`vae.encode_posterior`): SDXL's fp16 VAE upcasts its encoder
        once and keeps it so."""
        vae = self.base.vae
        posterior = encode_posterior(vae, pixels.to(self.execution_device), is_sdxl=self.base.is_sdxl)
        latents = posterior.mode()
        shift = getattr(vae.config, "shift_factor", None)
        if shift:
            latents = latents - shift
        return (latents * vae.config.scaling_factor).to(self.base.dtype)


def _condition_size(condition: Image.Image | torch.Tensor) -> tuple[int, int]:
    """(width, height) of a PIL image or a (…, H, W) tensor."""
    if isinstance(condition, Image.Image):
        return condition.size
    return int(condition.shape[-1]), int(condition.shape[-2])


def _condition_tensor(unit: AdapterUnit, width: int, height: int, crop: Box | None = None) -> torch.Tensor:
    """The adapter input (1, C, H, W) in [0, 1] at the output size; with `crop`, that region of
    it resized to the output size (inpainting at full resolution)."""
    channels = getattr(unit.adapter, "in_condition_channels", None) or 3
    condition = unit.condition
    if isinstance(condition, Image.Image):
        condition = condition_to_tensor(condition, channels, size=(width, height))
    elif condition.dim() == 3:
        condition = condition.unsqueeze(0)
    if condition.shape[-2:] != (height, width):
        condition = F.interpolate(condition.float(), size=(height, width), mode="bilinear", antialias=True)
    if crop is not None:
        left, top, right, bottom = crop
        region = condition[:, :, top:bottom, left:right].float()
        condition = F.interpolate(region, size=(height, width), mode="bilinear", antialias=True)
    return condition


def _converted(images: torch.Tensor, output_type: str):
    """(N, 3, H, W) in [0, 1] -> `pt` as is, `np` (N, H, W, 3) float array, `pil` 8-bit pictures."""
    if output_type == "pt":
        return images
    array = images.cpu().permute(0, 2, 3, 1).float().numpy()  # (N, H, W, 3)
    if output_type == "np":
        return array
    return [Image.fromarray(frame) for frame in (array * 255).round().astype(np.uint8)]


def _to_batch(tensor: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(1 or batch, ...) -> (batch, ...)."""
    if tensor.shape[0] == batch_size:
        return tensor
    return tensor.repeat(batch_size // tensor.shape[0], *([1] * (tensor.dim() - 1)))


def _move(module: torch.nn.Module, device: torch.device, dtype: torch.dtype | None) -> torch.nn.Module:
    """Move only when needed (a no-op `.to` still walks every parameter); `dtype=None` keeps it."""
    parameter = next(module.parameters(), None)
    if parameter is None:
        return module
    same_device = parameter.device.type == device.type and device.index in (None, parameter.device.index)
    if not same_device or (dtype is not None and parameter.dtype != dtype):
        module.to(device=device, dtype=dtype)
    return module


def _parameter_dtype(module: torch.nn.Module, default: torch.dtype) -> torch.dtype:
    parameter = next(module.parameters(), None)
    return default if parameter is None else parameter.dtype


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _overall_progress(request: _Request) -> Callable[[dict[str, Any]], None] | None:
    """The pass's step reports counted on from the passes before it, against the call's total."""
    callback = request.callback
    if callback is None:
        return None
    done, total = request.steps_done, request.steps_total

    def report(info: dict[str, Any]) -> None:
        callback({**info, "step": done + info["step"], "total": max(total, done + info["total"])})

    return report
