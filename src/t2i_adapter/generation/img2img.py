"""img2img, inpainting and the hires fix: what they add to a pipeline call, and the picture work
around the one denoising loop (`sampling.denoise`).

- img2img: the init picture is encoded by the VAE and noised with the scheduler's own `add_noise`
  at the step `strength` selects (`first_step`, diffusers' `get_timesteps` rule); the loop runs
  the rest of the schedule. Strength 1 starts from pure noise (diffusers' inpainting pipelines'
  `is_strength_max` rule), so it equals text-to-image with the same seed.
- inpainting: white in the mask is repainted. A 4-channel UNet gets the kept region's latents
  blended back after every step (`LatentInpaint`, as A1111 and diffusers'
  `StableDiffusionInpaintPipeline` do with an ordinary UNet); a 9-channel inpainting UNet gets the
  mask and the masked picture's latents as extra input channels. After decoding, the kept pixels
  are pasted back exactly, through the blurred mask (`paste_back`). `full_res` works on the
  masked region's crop (with padding, at the output size) and pastes it back (A1111's
  "inpaint at full resolution", diffusers' `padding_mask_crop`).
- hires fix: the result's latents (or its picture, with a plain resampler) are upscaled and
  repainted by an img2img pass at the larger size (`HiresFix`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.image_processor import VaeImageProcessor
from PIL import Image

from t2i_adapter.errors import T2IAdapterError

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # (left, top, right, bottom) in pixels

RESAMPLERS = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


@dataclass
class ImageToImage:
    """A picture to rework (`strength` of the schedule re-run), and optionally the part to repaint.

    `image`: the init picture (RGB). `mask`: white repainted, black kept (any size: resized to the
    picture's with a note). `mask_blur`: the seam's blur radius in pixels. `full_res`: work on the
    masked region only, cropped with `full_res_padding` pixels around it, at the output size.
    `name` / `mask_name` name the pictures in messages.
    """

    image: Image.Image
    strength: float = 0.75
    mask: Image.Image | None = None
    mask_blur: int = 4
    full_res: bool = False
    full_res_padding: int = 32
    name: str = "the init picture"
    mask_name: str = "the mask"

    def __post_init__(self) -> None:
        if not 0.0 < float(self.strength) <= 1.0:
            raise T2IAdapterError(f"strength must be above 0 up to 1, not {self.strength}")
        if self.full_res and self.mask is None:
            raise T2IAdapterError("inpainting at full resolution needs a mask")


@dataclass
class HiresFix:
    """Generate, upscale by `scale` ('latent' or a Pillow resampler), repaint at `strength` with
    `steps` steps (None: the first pass's)."""

    scale: float
    strength: float = 0.5
    steps: int | None = None
    upscaler: str = "latent"

    def __post_init__(self) -> None:
        if not 0.0 < float(self.strength) <= 1.0:
            raise T2IAdapterError(f"hires strength must be above 0 up to 1, not {self.strength}")
        if self.upscaler != "latent" and self.upscaler not in RESAMPLERS:
            raise T2IAdapterError(
                f"unknown hires upscaler '{self.upscaler}' (known: latent, {', '.join(RESAMPLERS)})"
            )


@dataclass
class PreparedPicture:
    """The init picture and mask at the output size, and what the sampler works on.

    `init`: the picture pasted back into (RGB, output size). `overlay`: the blurred mask the
    result is composited through (L, 255 = generated), None without a mask. `crop`: the region of
    `init` that is worked on with `full_res`, else None. `work`: the picture encoded (the crop
    resized to the output size with `full_res`). `work_mask`: the binary mask at the work size.
    """

    init: Image.Image
    overlay: Image.Image | None
    crop: Box | None
    work: Image.Image
    work_mask: Image.Image | None


def first_step(scheduler, steps: int, strength: float) -> int:
    """Index into `scheduler.timesteps` where an img2img pass starts (diffusers' `get_timesteps`:
    the last `strength` of the steps re-run; at least one)."""
    run = max(1, min(int(steps * strength), steps))
    return (steps - run) * getattr(scheduler, "order", 1)


def prepare_picture(img2img: ImageToImage, width: int, height: int) -> PreparedPicture:
    """The init picture and mask at (width, height), the crop for `full_res`, what is encoded."""
    init = _resized(img2img.image.convert("RGB"), width, height, Image.Resampling.LANCZOS)
    if img2img.mask is None:
        return PreparedPicture(init=init, overlay=None, crop=None, work=init, work_mask=None)
    mask = _mask_at(img2img, width, height)
    overlay = VaeImageProcessor.blur(mask, img2img.mask_blur) if img2img.mask_blur > 0 else mask
    if not img2img.full_res:
        return PreparedPicture(init=init, overlay=overlay, crop=None, work=init, work_mask=mask)
    crop = VaeImageProcessor.get_crop_region(mask, width, height, pad=img2img.full_res_padding)
    work = init.crop(crop).resize((width, height), Image.Resampling.LANCZOS)
    work_mask = _binary(mask.crop(crop).resize((width, height), Image.Resampling.BILINEAR))
    return PreparedPicture(init=init, overlay=overlay, crop=crop, work=work, work_mask=work_mask)


def _mask_at(img2img: ImageToImage, width: int, height: int) -> Image.Image:
    """The mask as a binary L picture (255: repaint) at the output size; another size than the
    picture's is resized with a note, an all-black mask is refused (nothing to repaint)."""
    mask = img2img.mask.convert("L")
    if mask.size != img2img.image.size:
        logger.warning(
            "note: %s is %dx%d, the picture %dx%d: the mask is resized to it",
            img2img.mask_name,
            *mask.size,
            *img2img.image.size,
        )
    mask = _binary(_resized(mask, width, height, Image.Resampling.BILINEAR))
    if mask.getextrema()[1] == 0:
        raise T2IAdapterError(
            f"{img2img.mask_name} has no white pixel at the output size: nothing to repaint"
        )
    return mask


def _resized(picture: Image.Image, width: int, height: int, resample: Image.Resampling) -> Image.Image:
    return picture if picture.size == (width, height) else picture.resize((width, height), resample)


def _binary(mask: Image.Image) -> Image.Image:
    """White (>= 128) -> 255, else 0."""
    return mask.point(lambda value: 255 if value >= 128 else 0)


def picture_tensor(picture: Image.Image) -> torch.Tensor:
    """RGB picture -> (1, 3, H, W) in [-1, 1], what the VAE encodes."""
    array = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0) * 2.0 - 1.0


def mask_tensor(mask: Image.Image) -> torch.Tensor:
    """L picture -> (1, 1, H, W) in [0, 1] (1: repaint)."""
    return torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None, None]


def latent_mask(mask: Image.Image, latent_size: tuple[int, int]) -> torch.Tensor:
    """The binary mask at the latent size (1, 1, h, w): a latent cell is repainted when any of its
    pixels is, so every white pixel is covered by the repainted latents."""
    return F.adaptive_max_pool2d(mask_tensor(mask), latent_size)


def paste_back(images: torch.Tensor, prepared: PreparedPicture) -> torch.Tensor:
    """Generated (N, 3, H, W) in [0, 1] composited onto the init picture through the blurred mask:
    where the overlay is black the init picture's pixels come back exactly."""
    if prepared.overlay is None:
        return images
    images = images.float()
    if prepared.crop is not None:
        images = _into_crop(images, prepared)
    init = (picture_tensor(prepared.init) + 1.0) / 2.0  # exactly value / 255
    init = init.to(images.device)
    alpha = mask_tensor(prepared.overlay).to(images.device)
    blended = init * (1.0 - alpha) + images * alpha
    return torch.where(alpha == 0, init.expand_as(images), blended)


def _into_crop(images: torch.Tensor, prepared: PreparedPicture) -> torch.Tensor:
    """The work-size result resized into its crop box of the init picture (outside: the init)."""
    left, top, right, bottom = prepared.crop
    canvas = ((picture_tensor(prepared.init) + 1.0) / 2.0).to(images.device)
    canvas = canvas.repeat(images.shape[0], 1, 1, 1)
    resized = F.interpolate(images, size=(bottom - top, right - left), mode="bicubic", antialias=True)
    canvas[:, :, top:bottom, left:right] = resized.clamp(0, 1)
    return canvas


def upscaled_size(width: int, height: int, scale: float, multiple: int) -> tuple[int, int]:
    """(width, height) times `scale`, rounded to `multiple`."""
    return (
        max(multiple, round(width * scale / multiple) * multiple),
        max(multiple, round(height * scale / multiple) * multiple),
    )


def resample_pictures(images: torch.Tensor, size: tuple[int, int], upscaler: str) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 3, h, w) in [-1, 1] at `size` = (w, h), through Pillow's
    resampler `upscaler` on the 8-bit picture (what a saved picture would be)."""
    frames = (images.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return torch.cat(
        [picture_tensor(Image.fromarray(frame).resize(size, RESAMPLERS[upscaler])) for frame in frames]
    )


@dataclass
class LatentInpaint:
    """What the denoising loop does to inpaint, batch B, latent size (h, w).

    `mask` (B, 1, h, w): 1 repaints. `image_latents` (B, C, h, w): the clean latents of the
    picture, `noise` the starting noise. With a 9-channel UNet `masked_latents` (the picture with
    its repainted part blacked out, encoded) and the mask are extra UNet input channels; with a
    4-channel UNet the kept region's latents, noised to the next step's level, replace the
    sampler's after every step.
    """

    mask: torch.Tensor
    image_latents: torch.Tensor
    noise: torch.Tensor
    masked_latents: torch.Tensor | None = None
    _extra: torch.Tensor | None = field(default=None, init=False, repr=False)

    def unet_input(self, model_input: torch.Tensor) -> torch.Tensor:
        """(2B or B, C, h, w) scaled latents -> the UNet's input ((…, 2C + 1, h, w) for 9 channels)."""
        if self.masked_latents is None:
            return model_input
        extra = self._extra
        if extra is None or extra.shape[0] != model_input.shape[0] or extra.dtype != model_input.dtype:
            # the same at every step: built on the first step, not in each one
            halves = model_input.shape[0] // self.mask.shape[0]
            extra = torch.cat([self.mask, self.masked_latents], dim=1).to(model_input.dtype)
            self._extra = extra = extra.repeat(halves, 1, 1, 1)
        return torch.cat([model_input, extra], dim=1)

    def after_step(self, latents: torch.Tensor, scheduler, index: int) -> torch.Tensor:
        """4-channel UNet: blend the kept region back, at the noise level of step `index + 1`."""
        if self.masked_latents is not None:
            return latents
        kept = self.image_latents
        timesteps = scheduler.timesteps
        if index + 1 < len(timesteps):
            kept = scheduler.add_noise(kept, self.noise, timesteps[index + 1 : index + 2])
        return (1 - self.mask) * kept + self.mask * latents
