"""Condition image -> adapter input tensor `(1, C, H, W)` in [0, 1], and condition resizing.

Resizing picks the filter from the map's content, so no map gets values it never had where that
matters:

* maps with few distinct colours (up to 256, other than pure black and white: segmentation maps, colour palettes) use NEAREST, so
  every output colour is one of the input's (a class colour is never blended into another);
* binary edge maps (only black and white) and continuous images (photos, depth) use an
  antialiased filter: BOX/area-like LANCZOS when shrinking, so thin lines fade instead of
  vanishing, BICUBIC when enlarging. An edge map therefore gets soft grey line borders, which
  adapters read as weaker edges.

Pass `resample=` to override.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from t2i_adapter.io.images import normalize_image

_MODES = {1: "L", 3: "RGB"}
_DISCRETE_MAX_COLOURS = 256


def resize_condition(
    image: Image.Image, width: int, height: int, *, resample: Image.Resampling | None = None
) -> Image.Image:
    """Resize a condition map to `width` x `height` with a content-aware filter (see module doc)."""
    if width < 1 or height < 1:
        raise ValueError(f"condition size must be positive, not {width}x{height}")
    if image.size == (width, height):
        return image
    if resample is None:
        resample = _pick_filter(image, width, height)
    return image.resize((width, height), resample)


def condition_to_tensor(
    image: Image.Image,
    channels: int,
    *,
    size: tuple[int, int] | None = None,
    resample: Image.Resampling | None = None,
) -> torch.Tensor:
    """A PIL condition map as a float32 tensor `(1, channels, H, W)` in [0, 1] (no [-1, 1] scaling).

    `channels` 1 takes the grey level (an RGB map with equal channels converts losslessly),
    3 repeats a grey map; `size=(width, height)` resizes first.
    """
    if channels not in _MODES:
        raise ValueError(f"channels must be 1 or 3, not {channels!r}")
    if size is not None:
        image = resize_condition(image, int(size[0]), int(size[1]), resample=resample)
    if image.mode != _MODES[channels]:
        image = _flatten(image).convert(_MODES[channels])
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]  # (H, W, 1)
    tensor = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(255.0)  # (C, H, W)
    return tensor.unsqueeze(0)  # (1, C, H, W)


def _flatten(image: Image.Image) -> Image.Image:
    if image.mode in ("RGB", "L"):
        return image

    return normalize_image(image, mode="RGB")


def _pick_filter(image: Image.Image, width: int, height: int) -> Image.Resampling:
    colours = image.getcolors(maxcolors=_DISCRETE_MAX_COLOURS)
    if colours is not None and not _is_black_and_white(colours):
        return Image.Resampling.NEAREST
    shrinking = width * height < image.width * image.height
    return Image.Resampling.LANCZOS if shrinking else Image.Resampling.BICUBIC


def _is_black_and_white(colours: list[tuple[int, int | tuple[int, ...]]]) -> bool:
    def level(colour: int | tuple[int, ...]) -> set[int]:
        return {colour} if isinstance(colour, int) else set(colour[:3])

    return all(level(colour) <= {0} or level(colour) <= {255} for _, colour in colours)
