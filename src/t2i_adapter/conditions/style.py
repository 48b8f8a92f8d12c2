"""The style condition: a reference photo seen the way CLIP ViT-L/14's vision tower sees it.

The style adapter reads no spatial map: it turns CLIP-vision hidden states `(N, 257, 1024)` of a
reference image into extra context tokens. Here the registry gets the `style` preprocessor,
whose output is the 224x224 centre crop CLIP encodes (so `--save-cond` and the web UI preview
show what actually steers the image); the encoder itself is in `clip_vision.py`. This file needs
no torch, so the CLI can name the default CLIP model in its help cheaply.
"""

from __future__ import annotations

from PIL import Image

from t2i_adapter.conditions.registry import register_condition
from t2i_adapter.errors import T2IAdapterError

# The original style adapter reads `last_hidden_state` of this model's vision tower.
DEFAULT_CLIP_VISION = "openai/clip-vit-large-patch14"
CLIP_IMAGE_SIZE = 224  # ViT-L/14 at 224 px: 16 x 16 patches + 1 class token = 257 tokens


def clip_view(image: Image.Image, size: int = CLIP_IMAGE_SIZE) -> Image.Image:
    """CLIP's geometric preprocessing: bicubic resize of the short side to `size`, centre crop."""
    if not 16 <= int(size) <= 1024:
        raise T2IAdapterError(f"option size={size} is out of range [16, 1024] (pixels)")
    size = int(size)
    width, height = image.size
    scale = size / min(width, height)
    resized = image.resize(
        (max(size, round(width * scale)), max(size, round(height * scale))), Image.Resampling.BICUBIC
    )
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))


@register_condition(
    "style",
    channels=3,
    description="reference image for the style adapter: the 224x224 centre crop CLIP ViT-L/14 encodes",
    needs_weights=False,  # the preview is geometry only; the CLIP encoder runs at generation time
    aliases=("clip_vision", "reference"),
    keeps_size=False,
)
def style(image: Image.Image, size: int = CLIP_IMAGE_SIZE) -> Image.Image:
    """The crop of `image` that the CLIP vision encoder reads for the style adapter."""
    return clip_view(image, size)
