"""File input and output: safe image loading, PNGs with embedded parameters, atomic writes."""

from t2i_adapter.io.atomic import atomic_path, atomic_write
from t2i_adapter.io.images import load_image, load_image_from_bytes, normalize_image
from t2i_adapter.io.png import read_png_parameters, save_png

__all__ = [
    "atomic_path",
    "atomic_write",
    "load_image",
    "load_image_from_bytes",
    "normalize_image",
    "read_png_parameters",
    "save_png",
]
