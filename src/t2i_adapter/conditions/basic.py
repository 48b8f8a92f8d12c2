"""Weight-free preprocessors: canny, color, sketch (XDoG), threshold, invert, scribble, none.

Every function takes an RGB image and returns the condition map at the same size. Edge-like
maps (canny, sketch, threshold, invert, scribble) are 1 channel with white (255) lines on black,
the polarity the original sketch and canny adapters were trained on.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
from PIL import Image

from t2i_adapter.conditions.registry import register_condition
from t2i_adapter.errors import T2IAdapterError

logger = logging.getLogger(__name__)

COLOR_BLOCKS_ACROSS = 8  # the original: block 64 on 512 px pictures, i.e. 8 blocks on the long side
DRAWING_DARK_SHARE = 0.85  # a ready sketch: at least this share of near-black pixels ...
DRAWING_MAX_CORE_SHARE = 0.1  # ... and white strokes so thin that a 5x5 erosion leaves under 10 %
_noted: set[str] = set()

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _rgb_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.uint8)  # (H, W, 3)


def _gray_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.uint8)  # (H, W)


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise T2IAdapterError(f"option {name}={value} is out of range [{low}, {high}]")


# ---------------------------------------------------------------------------------------------
# Preprocessors
# ---------------------------------------------------------------------------------------------


@register_condition(
    "canny",
    channels=1,
    description="Canny edges (cv2.Canny, thresholds 100/200 as in the original), white on black",
)
def canny(image: Image.Image, low_threshold: int = 100, high_threshold: int = 200) -> Image.Image:
    """Canny edge detection on the colour image (gradients per channel, the strongest wins)."""
    _check_range("low_threshold", low_threshold, 0, 1000)
    _check_range("high_threshold", high_threshold, low_threshold, 10000)
    edges = cv2.Canny(_rgb_array(image), float(low_threshold), float(high_threshold))
    return Image.fromarray(edges, mode="L")


@register_condition(
    "color",
    channels=3,
    description=(
        "colour palette: bicubic downsample by block_size, nearest upsample back (the original); "
        "block_size=0 (default) is the long side / 8: 64 at 512 px as in the original, 8 at 64 px"
    ),
    aliases=("colour", "palette"),
)
def color(image: Image.Image, block_size: int = 0) -> Image.Image:
    """The original colour-palette map: bicubic downsample by `block_size`, nearest upsample.

    `block_size=0` follows the picture: its long side / 8, so every picture keeps the 8 blocks
    across that the original's 64 px blocks give a 512 px picture (a 64 px one is not one colour).
    """
    _check_range("block_size", block_size, 0, 4096)
    pixels = _rgb_array(image)
    height, width = pixels.shape[:2]
    block_size = block_size or max(1, max(width, height) // COLOR_BLOCKS_ACROSS)
    small = cv2.resize(
        pixels,
        (max(1, width // block_size), max(1, height // block_size)),
        interpolation=cv2.INTER_CUBIC,
    )
    blocks = cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)
    return Image.fromarray(blocks, mode="RGB")


@register_condition(
    "sketch",
    channels=1,
    description=(
        "weight-free sketch: XDoG lines, thresholded to white on black (PiDiNet stand-in); a picture "
        "that already is a white-on-black drawing is passed through (keep_drawings=false to trace it)"
    ),
    aliases=("xdog",),
)
def sketch(
    image: Image.Image,
    sigma: float = 1.0,
    k: float = 1.6,
    tau: float = 0.98,
    phi: float = 200.0,
    threshold: float = 0.5,
    keep_drawings: bool = True,
) -> Image.Image:
    """XDoG (Winnemoeller et al. 2012): soft threshold of G_sigma - tau * G_{k sigma}, inverted.

    Lines appear on the dark side of every edge; flat regions stay black. `threshold` in
    (0, 1) makes the map binary like PiDiNet's thresholded output; 0 keeps it soft. XDoG
    would draw both sides of every stroke of a ready white-on-black drawing, so such a picture
    (`is_white_on_black_drawing`) is returned as it is, made binary, unless `keep_drawings=False`.
    """
    _check_range("sigma", sigma, 0.1, 50.0)
    _check_range("k", k, 1.01, 10.0)
    _check_range("tau", tau, 0.0, 1.0)
    _check_range("threshold", threshold, 0.0, 1.0)
    gray = _gray_array(image)
    if keep_drawings and is_white_on_black_drawing(gray):
        _note_once(
            "sketch",
            "note: sketch: the picture already is white lines on black; used as the map "
            "(--cond-type none says so; --cond-option keep_drawings=false traces it)",
        )
        return Image.fromarray(np.where(gray >= 128, 255, 0).astype(np.uint8), mode="L")
    gray = gray.astype(np.float32) / 255.0
    fine = cv2.GaussianBlur(gray, (0, 0), sigma)
    coarse = cv2.GaussianBlur(gray, (0, 0), sigma * k)
    difference = fine - tau * coarse
    # Eq. (XDoG): T = 1 where D >= 0, else 1 + tanh(phi * D); lines are 1 - T.
    lines = np.where(difference >= 0.0, 0.0, -np.tanh(phi * difference))
    if threshold > 0.0:
        lines = (lines > threshold).astype(np.float32)
    return Image.fromarray(np.round(np.clip(lines, 0.0, 1.0) * 255.0).astype(np.uint8), mode="L")


def is_white_on_black_drawing(gray: np.ndarray) -> bool:
    """True for a ready sketch map: mostly near-black (> 85 %), the rest near-white, in strokes
    thin enough that a 5x5 erosion removes almost all of them (a filled white shape is no sketch)."""
    dark, light = gray <= 32, gray >= 224
    if dark.mean() <= DRAWING_DARK_SHARE or not light.any() or (dark | light).mean() < 0.95:
        return False
    core = cv2.erode(light.astype(np.uint8), np.ones((5, 5), np.uint8))
    return core.sum() < DRAWING_MAX_CORE_SHARE * light.sum()


def _note_once(key: str, message: str) -> None:
    """Log `message` the first time `key` is seen in this process (one line on stderr by default)."""
    if key not in _noted:
        _noted.add(key)
        logger.warning(message)


@register_condition(
    "threshold",
    channels=1,
    description="binary map: grey level above the threshold (0-255) is white",
    aliases=("binary",),
)
def threshold(image: Image.Image, threshold: int = 128, invert: bool = False) -> Image.Image:
    """Global binarisation of the grey image: `value >= threshold` becomes 255, else 0."""
    _check_range("threshold", threshold, 0, 256)
    mask = _gray_array(image) >= threshold
    if invert:
        mask = ~mask
    return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L")


@register_condition(
    "invert",
    channels=1,
    description="grey image inverted: a black-on-white drawing becomes white lines on black",
)
def invert(image: Image.Image) -> Image.Image:
    """Inverted grey level (255 - value)."""
    return Image.fromarray(255 - _gray_array(image), mode="L")


@register_condition(
    "scribble",
    channels=1,
    description="a hand drawing made binary white-on-black (light paper is detected and inverted)",
)
def scribble(image: Image.Image, threshold: int = 128) -> Image.Image:
    """Binarise a drawing; if most pixels are light (paper), invert so the strokes are white."""
    _check_range("threshold", threshold, 1, 255)
    gray = _gray_array(image)
    if np.median(gray) >= threshold:
        gray = 255 - gray
    return Image.fromarray(np.where(gray >= threshold, 255, 0).astype(np.uint8), mode="L")


@register_condition(
    "none",
    channels=3,
    description="use the image as it is (a ready condition map); 1-channel adapters read its grey level",
    aliases=("identity", "raw"),
)
def none(image: Image.Image) -> Image.Image:
    """Identity: the image is already a condition map (RGB; converted to grey for 1-channel adapters)."""
    return image.convert("RGB")
