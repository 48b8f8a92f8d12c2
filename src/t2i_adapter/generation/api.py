"""generate(): GenerationSettings -> images. The one entry point the CLI and the web UI call.

Cheap checks first (names, files, ranges), so a typo fails in milliseconds instead of after a
model download; then conditions are read and preprocessed, models come from the `ModelCache`,
and the pipeline runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from PIL import Image

from t2i_adapter.conditions.registry import get_preprocessor
from t2i_adapter.devices import resolve_device
from t2i_adapter.errors import ModelMismatchError, T2IAdapterError
from t2i_adapter.generation.cache import ModelCache
from t2i_adapter.generation.img2img import HiresFix, ImageToImage
from t2i_adapter.generation.loras import lora_file
from t2i_adapter.generation.schedulers import check_scheduler_name
from t2i_adapter.generation.settings import AdapterSpec, GenerationSettings
from t2i_adapter.generation.units import AdapterUnit
from t2i_adapter.hub import locate
from t2i_adapter.io.images import load_image

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

__all__ = ["GenerationResult", "ModelCache", "generate"]

logger = logging.getLogger(__name__)

SMALL_CONDITION = 16  # a condition with a side under this many pixels steers almost nothing: noted


@dataclass
class GenerationResult:
    """The images, the condition maps the adapters saw (one per adapter), the settings as run.

    `settings` has the resolved width and height filled in, so re-running it (for example from
    the PNG it is stored in) gives the same image. They are the first pass's size; the images'
    own size is `output_width` x `output_height`, larger after a hires fix (0: not given).
    """

    images: list[Image.Image]
    conditions: list[Image.Image]
    settings: GenerationSettings
    timings: dict[str, float] = field(default_factory=dict)
    output_width: int = 0
    output_height: int = 0

    def size_change(self) -> str | None:
        """`512x512 -> 1024x1024 (hires x2)` when the images are larger than the first pass; else None."""
        first = (self.settings.width, self.settings.height)
        final = (self.output_width, self.output_height)
        if not all(final) or final == first:
            return None
        scale = self.settings.hires_scale
        return f"{first[0]}x{first[1]} -> {final[0]}x{final[1]}" + (f" (hires x{scale:g})" if scale else "")


def _check_names(settings: GenerationSettings) -> list[dict[str, Any]]:
    """Name checks that need no model: scheduler, condition types and their options.

    Returns each adapter's condition options as the preprocessor takes them (text converted).
    """
    check_scheduler_name(settings.scheduler)
    options = []
    for spec in settings.adapters:
        preprocessor = get_preprocessor(spec.cond_type)
        if preprocessor.name == "style" and "model" in spec.cond_options:
            raise T2IAdapterError(
                f"adapter '{spec.adapter}': the style condition takes no model option; "
                "the CLIP vision model is chosen with --clip-vision"
            )
        options.append(preprocessor.check_options(spec.cond_options))
    return options


def _condition_images(
    settings: GenerationSettings, condition_images: Sequence[Image.Image | None] | None
) -> list[Image.Image]:
    if condition_images is not None and len(condition_images) != len(settings.adapters):
        raise T2IAdapterError(
            f"{len(condition_images)} condition images for {len(settings.adapters)} adapters"
        )
    images = []
    for index, spec in enumerate(settings.adapters):
        given = condition_images[index] if condition_images is not None else None
        if given is not None:
            images.append(given)
        elif spec.cond:
            images.append(load_image(spec.cond))
        else:
            raise T2IAdapterError(f"adapter '{spec.adapter}' has no condition image")
    return images


def _note_small_conditions(settings: GenerationSettings, images: list[Image.Image]) -> None:
    for spec, image in zip(settings.adapters, images, strict=True):
        if min(image.size) < SMALL_CONDITION and get_preprocessor(spec.cond_type).name != "style":
            where = spec.cond or f"adapter '{spec.adapter}'"
            logger.warning(
                "note: the condition %s is %dx%d pixels: stretched to the picture's size, it steers little",
                where,
                *image.size,
            )


def _note_channel_mismatch(spec: AdapterSpec, adapter: torch.nn.Module) -> None:
    """A 1-channel map fed to a 3-channel adapter (or back) is converted; say so, the type may be wrong."""
    wanted = getattr(adapter, "in_condition_channels", None)
    preprocessor = get_preprocessor(spec.cond_type)
    if preprocessor.name == "none":  # a ready map passes through as it is: no type to doubt
        return
    if wanted in (1, 3) and preprocessor.channels in (1, 3) and wanted != preprocessor.channels:
        logger.warning(
            "note: adapter '%s' reads %d-channel maps but --cond-type %s makes %d-channel ones "
            "(converted); is the condition type right?",
            spec.adapter,
            wanted,
            spec.cond_type,
            preprocessor.channels,
        )


def _note_rounded_size(settings: GenerationSettings, width: int, height: int) -> None:
    for flag, asked, got in (("--width", settings.width, width), ("--height", settings.height, height)):
        if asked is not None and asked != got:
            logger.warning(
                "note: %s %d is rounded to %d (a multiple this model and its adapters need)", flag, asked, got
            )


def _img2img(
    settings: GenerationSettings, init_image: Image.Image | None, mask_image: Image.Image | None
) -> ImageToImage | None:
    """The init picture and mask: the ones given in memory, else read from the settings' paths
    (safely: size cap, bombs refused); None without an init picture."""
    if mask_image is not None and init_image is None and settings.init_image is None:
        raise T2IAdapterError("a mask needs an init picture: the picture whose white part is repainted")
    if init_image is None and settings.init_image is None:
        return None
    picture = init_image if init_image is not None else load_image(settings.init_image)
    mask = mask_image
    if mask is None and settings.mask is not None:
        mask = load_image(settings.mask, mode="L")
    return ImageToImage(
        image=picture,
        strength=settings.strength,
        mask=mask,
        mask_blur=settings.mask_blur,
        full_res=settings.inpaint_full_res,
        full_res_padding=settings.inpaint_full_res_padding,
        name=settings.init_image or "the init picture",
        mask_name=settings.mask or "the mask",
    )


def _hires(settings: GenerationSettings) -> HiresFix | None:
    if settings.hires_scale is None:
        return None
    return HiresFix(
        scale=settings.hires_scale,
        strength=settings.hires_strength,
        steps=settings.hires_steps,
        upscaler=settings.hires_upscaler,
    )


def _preprocess(
    spec: AdapterSpec, image: Image.Image, options: dict[str, Any], device: torch.device
) -> Image.Image:
    """The condition map; a model-based preprocessor runs on the generation's device unless its
    own `device=` option names another (the injected device is not recorded in the settings)."""
    preprocessor = get_preprocessor(spec.cond_type)
    if "device" in preprocessor.options and "device" not in options:
        options = {**options, "device": str(device)}
    return preprocessor(image, **options)


def _condition_picture(tensor: torch.Tensor) -> Image.Image:
    """(1, C, H, W) in [0, 1] -> the grey or RGB picture the adapter read."""
    array = (tensor[0].float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    if array.shape[2] == 1:
        return Image.fromarray(array[:, :, 0])  # uint8 (H, W): mode L
    return Image.fromarray(array[:, :, :3])  # uint8 (H, W, 3): mode RGB


def generate(
    settings: GenerationSettings,
    *,
    condition_images: Sequence[Image.Image | None] | None = None,
    init_image: Image.Image | None = None,
    mask_image: Image.Image | None = None,
    cache: ModelCache | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> GenerationResult:
    """Run one generation: load (or reuse) the models, preprocess conditions, sample, decode.

    `condition_images[i]`, when given, replaces reading `settings.adapters[i].cond` from disk;
    `init_image` and `mask_image` likewise replace reading `settings.init_image` / `settings.mask`
    (img2img with `settings.strength`; inpainting: white repainted, black kept).
    `progress` receives the sampler's report after each denoising step, as it is: `step`
    (steps completed, 1..n), `total` (n), `timestep`, `latents`, `adapters_active`; with the
    hires fix one count over both passes (n: the first pass's steps plus the hires pass's).
    """
    cache = cache or ModelCache()
    device = resolve_device(settings.device)
    dtype = TORCH_DTYPES[settings.dtype]
    if dtype == torch.float16 and device.type == "cpu":
        raise T2IAdapterError("float16 needs a GPU; on the CPU use --dtype float32 or bfloat16")
    options = _check_names(settings)
    for lora in settings.loras:
        lora_file(lora)  # a missing LoRA fails now, not after the base model has loaded
    if settings.vae:
        locate(settings.vae, what="VAE")  # so does a missing VAE file (nothing is downloaded here)
    images = _condition_images(settings, condition_images)
    _note_small_conditions(settings, images)
    img2img = _img2img(settings, init_image, mask_image)
    prepared = [
        _preprocess(spec, image, spec_options, device)
        for spec, image, spec_options in zip(settings.adapters, images, options, strict=True)
    ]

    pipeline = cache.pipeline(
        settings.model,
        dtype=dtype,
        device=str(device),
        attention_slicing=settings.attention_slicing,
        vae_tiling=settings.vae_tiling,
        cpu_offload=settings.cpu_offload,
        clip_vision=settings.clip_vision,
        model_config=settings.model_config,
        prediction_type=settings.prediction_type,
        vae=settings.vae,
        compile=settings.compile,
    )
    adapter_device = str(pipeline.execution_device)
    units = []
    for spec, condition in zip(settings.adapters, prepared, strict=True):
        adapter = cache.adapter(spec.adapter, dtype=dtype, device=adapter_device)
        if getattr(adapter, "adapter_kind", None) == "fuser":
            raise ModelMismatchError(
                f"'{spec.adapter}' is a CoAdapter fuser; pass it with --fuser, not --adapter"
            )
        _note_channel_mismatch(spec, adapter)
        units.append(
            AdapterUnit(
                adapter=adapter,
                condition=condition,
                weight=spec.weight,
                start=spec.start,
                end=spec.end,
                task=spec.task or spec.cond_type,
                name=spec.adapter,
            )
        )
    fuser = None
    if settings.fuser:
        fuser = cache.adapter(settings.fuser, dtype=dtype, device=adapter_device)
        if getattr(fuser, "adapter_kind", None) != "fuser":
            raise ModelMismatchError(f"'{settings.fuser}' is not a CoAdapter fuser")

    with cache.loras_applied(pipeline, settings.loras):
        output = pipeline(
            settings.prompt,
            units,
            negative_prompt=settings.negative_prompt or None,
            steps=settings.steps,
            guidance_scale=settings.guidance_scale,
            seed=settings.seed,
            num_images=settings.num_images,
            width=settings.width,
            height=settings.height,
            resize_short_edge=settings.resize_short_edge,
            max_resolution=settings.max_resolution or pipeline.base.native_resolution**2,
            scheduler=settings.scheduler,
            eta=settings.eta,
            fuser=fuser,
            img2img=img2img,
            hires=_hires(settings),
            callback=progress,
        )
    _note_rounded_size(settings, output.width, output.height)
    conditions = [
        prepared[index] if unit.kind == "style" else _condition_picture(output.conditions[index])
        for index, unit in enumerate(units)
    ]
    resolved = settings.replace(
        width=output.width,
        height=output.height,
        adapters=[
            replace(spec, cond_options=spec_options)  # recorded with their types (`384`, not `"384"`)
            for spec, spec_options in zip(settings.adapters, options, strict=True)
        ],
    )
    return GenerationResult(
        images=output.images,
        conditions=conditions,
        settings=resolved,
        timings=output.timings,
        output_width=output.output_width,
        output_height=output.output_height,
    )
