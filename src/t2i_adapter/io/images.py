"""Safe image loading: every valid image becomes 8-bit RGB (or L), every bad file an `InputFileError`.

Awkward but valid inputs and what they become:

* EXIF orientation is applied (a phone photo comes out upright).
* Transparency (RGBA, LA, PA, palette or L/RGB with a transparent colour) is composited onto a
  `background` colour, white by default: a drawing on a transparent canvas becomes a drawing on
  white paper, which the `invert`/`scribble` preprocessors turn into white lines on black.
* CMYK is converted with its embedded ICC profile when it has one; L*a*b* through a colour
  transform to sRGB; YCbCr and HSV by Pillow's conversion.
* 16-bit ("I;16", "I;16B", ...) and 32-bit integer ("I") greyscale is scaled from 0..65535 to
  0..255 (`value / 257`), so a 16-bit depth map keeps its full range instead of clipping;
  an "I" image whose values all fit in 0..255 is taken as 8-bit. Float ("F") images with values
  in [0, 1] are scaled by 255, others are clipped to 0..255.
* 1-bit images become 0/255; animated GIF/WebP/PNG give their first frame.

Only the formats in `IMAGE_FORMATS` are decoded (PNG, JPEG, GIF, WebP, BMP, TIFF, ...); others
Pillow knows (EPS, which would run Ghostscript, WMF, FITS, ...) are refused as "not an image".

Decompression bombs are refused from the header, before any pixel is decoded: an image with more
than `max_pixels` pixels (default 64 MP) raises. Pillow's own global limit
(`PIL.Image.MAX_IMAGE_PIXELS`) is never changed here; its warning is silenced only for the
duration of `Image.open` (our smaller limit is checked instead; before Python 3.14 that filter is
process-wide for that moment, which can only hide that one warning class elsewhere), and its error (at twice its
limit) becomes an `InputFileError` too, so `max_pixels` above that needs the caller to raise
Pillow's global.
"""

from __future__ import annotations

import io
import os
import warnings
from os import PathLike
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from t2i_adapter.errors import InputFileError, first_line
from t2i_adapter.io.text import open_regular_file

DEFAULT_MAX_PIXELS = 64 * 1024 * 1024
WHITE = (255, 255, 255)

# Formats we decode. Pillow can open more, but some (EPS runs Ghostscript, WMF, FITS, ...) are
# not images a user means as a condition and widen what an untrusted upload can reach.
IMAGE_FORMATS = (
    "PNG",
    "JPEG",
    "GIF",
    "WEBP",
    "BMP",
    "DIB",
    "TIFF",
    "PPM",
    "TGA",
    "ICO",
    "QOI",
    "AVIF",
    "JPEG2000",
)

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I;16S"}


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def load_image(
    path: str | PathLike,
    *,
    mode: str = "RGB",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int | None = None,
    background: tuple[int, int, int] = WHITE,
) -> Image.Image:
    """Read an image file into a fully decoded 8-bit `mode` ("RGB" or "L") Pillow image."""
    _check_mode(mode)
    file = Path(path)
    if not file.exists():
        raise InputFileError(file, "no such file")
    if file.is_dir():
        raise InputFileError(file, "is a folder, not an image file")
    # a regular file only: a FIFO would block, a link to /dev/zero read without end
    with os.fdopen(open_regular_file(file, "the image"), "rb") as handle:
        _check_byte_size(file, os.fstat(handle.fileno()).st_size, max_bytes)
        return _decode(handle, str(file), mode=mode, max_pixels=max_pixels, background=background)


def load_image_from_bytes(
    data: bytes,
    name: str = "<upload>",
    *,
    mode: str = "RGB",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int | None = None,
    background: tuple[int, int, int] = WHITE,
) -> Image.Image:
    """Decode image bytes (an upload) like `load_image`; errors name the image as `name`."""
    _check_mode(mode)
    _check_byte_size(name, len(data), max_bytes)
    return _decode(io.BytesIO(data), name, mode=mode, max_pixels=max_pixels, background=background)


def check_image_bytes(
    data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int | None = None
) -> tuple[int, int]:
    """The (width, height) an image's header claims, without decoding a pixel; the same refusals as
    `load_image_from_bytes` (empty, over `max_bytes`, not an image, over `max_pixels`). For pictures
    another library will decode, such as a canvas Gradio hands over."""
    _check_byte_size(name, len(data), max_bytes)
    with _open_checked(io.BytesIO(data), name, max_pixels) as opened:
        return opened.size


def normalize_image(
    image: Image.Image, *, mode: str = "RGB", background: tuple[int, int, int] = WHITE
) -> Image.Image:
    """Convert an already-open Pillow image (any mode) to 8-bit `mode` the way `load_image` does."""
    _check_mode(mode)
    return _to_8bit(image, mode, background)


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


def _check_mode(mode: str) -> None:
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', not {mode!r}")


def _check_byte_size(name: str | PathLike, size: int, max_bytes: int | None) -> None:
    if size == 0:
        raise InputFileError(name, "file is empty")
    if max_bytes is not None and size > max_bytes:
        raise InputFileError(name, f"file is too large ({size} bytes; the limit is {max_bytes})")


def _decode(
    stream: BinaryIO, name: str, *, mode: str, max_pixels: int, background: tuple[int, int, int]
) -> Image.Image:
    with _open_checked(stream, name, max_pixels) as opened:
        try:
            opened.seek(0)  # first frame of an animation
            opened.load()
            upright = ImageOps.exif_transpose(opened)
            return _to_8bit(upright if upright is not None else opened, mode, background)
        except InputFileError:
            raise
        except Exception as error:  # truncated data, bad checksums, broken compression streams
            raise InputFileError(name, f"truncated or corrupt image data ({first_line(error)})") from None


def _open_checked(stream: BinaryIO, name: str, max_pixels: int) -> Image.Image:
    """The image opened lazily (header only), refused if it is no image or has too many pixels."""
    try:
        with warnings.catch_warnings():
            # Our own (smaller) limit is checked below from the header; Pillow's warning would
            # only be noise. Its DecompressionBombError (2x its limit) is still raised.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(stream, formats=_decodable_formats())
    except Image.DecompressionBombError:
        raise InputFileError(name, "image is too large (decompression bomb protection)") from None
    except UnidentifiedImageError:
        raise InputFileError(name, "not an image, or a format that cannot be read") from None
    except Exception as error:  # a malformed header can raise almost anything inside Pillow
        raise InputFileError(name, f"corrupt image header ({first_line(error)})") from None
    width, height = opened.size
    problem = None
    if width <= 0 or height <= 0:
        problem = f"image has no pixels ({width}x{height})"
    elif width * height > max_pixels:
        problem = (
            f"image is too large: {width}x{height} = {width * height} pixels "
            f"(the limit is {max_pixels}; refusing to decode a possible decompression bomb)"
        )
    if problem:
        opened.close()
        raise InputFileError(name, problem)
    return opened


def _decodable_formats() -> list[str]:
    Image.init()
    return [name for name in IMAGE_FORMATS if name in Image.OPEN]


# ---------------------------------------------------------------------------------------------
# Mode conversion
# ---------------------------------------------------------------------------------------------


def _to_8bit(image: Image.Image, mode: str, background: tuple[int, int, int]) -> Image.Image:
    if image.mode == "1":
        image = image.convert("L")
    elif image.mode in _SIXTEEN_BIT_MODES or image.mode == "I":
        image = _scale_wide_integer(image)
    elif image.mode == "F":
        image = _scale_float(image)
    elif image.mode == "CMYK":
        image = _cmyk_to_rgb(image)
    elif image.mode == "LAB":
        image = _lab_to_rgb(image)
    elif image.mode == "La":  # premultiplied grey + alpha: Pillow converts it only to LA
        image = image.convert("LA")

    if _has_transparency(image):
        image = _composite(image, background)
    if image.mode != mode:
        image = image.convert(mode)
    return image


def _scale_wide_integer(image: Image.Image) -> Image.Image:
    values = np.asarray(image)
    if values.dtype.kind not in "iu":  # some Pillow builds hand back I;16 as raw bytes
        values = np.asarray(image.convert("I"))
    values = values.astype(np.int64)
    if image.mode == "I" and values.size and values.min() >= 0 and values.max() <= 255:
        scaled = values  # an 8-bit image stored as 32-bit integers
    else:
        scaled = np.clip(values, 0, 65535) / 257.0
    return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")


def _scale_float(image: Image.Image) -> Image.Image:
    values = np.nan_to_num(np.asarray(image, dtype=np.float64))
    if values.size and values.min() >= 0.0 and values.max() <= 1.0:
        values = values * 255.0
    return Image.fromarray(np.round(np.clip(values, 0, 255)).astype(np.uint8), mode="L")


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    profile = image.info.get("icc_profile")
    if profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            converted = ImageCms.profileToProfile(
                image, source, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: fall back to the plain conversion
    return image.convert("RGB")


def _lab_to_rgb(image: Image.Image) -> Image.Image:
    # Pillow's plain convert() would reinterpret the L*a*b* channels as RGB.
    transform = ImageCms.buildTransform(
        ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
    )
    return ImageCms.applyTransform(image, transform)


def _has_transparency(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _composite(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (*background, 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")
