"""The style condition: a reference photo seen the way CLIP ViT-L/14's vision tower sees it.

The style adapter reads no spatial map: it turns CLIP-vision hidden states `(N, 257, 1024)` of a
reference image into extra context tokens. The encoder itself belongs to generation
(`t2i_adapter.generation.style_images.StyleImageEncoder`, one copy in the package); here the
registry gets the `style` preprocessor, whose output is the 224x224 centre crop CLIP encodes
(so `--save-cond` and the web UI preview show what actually steers the image), and
`encode_style_image` for callers that want the features of a photo directly.
"""

from __future__ import annotations

import torch
from PIL import Image

from t2i_adapter.conditions.model_loading import load_cached, release_memory
from t2i_adapter.conditions.registry import register_condition
from t2i_adapter.devices import resolve_device
from t2i_adapter.errors import T2IAdapterError
from t2i_adapter.generation.settings import DEFAULT_CLIP_VISION as CLIP_VISION_MODEL

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


def load_clip_vision(name_or_path: str = CLIP_VISION_MODEL, device: str | None = None):
    """The package's CLIP vision encoder for style images, loaded once per process."""
    from t2i_adapter.generation.style_images import StyleImageEncoder

    target = resolve_device(device)
    return load_cached(
        ("clip_vision", str(name_or_path), str(target)),
        lambda: StyleImageEncoder.load(str(name_or_path), device=target),
    )


def encode_style_image(
    image: Image.Image, model: str = CLIP_VISION_MODEL, device: str | None = None
) -> torch.Tensor:
    """CLIP-vision `last_hidden_state` of one image: (1, 257, 1024) for ViT-L/14, the style adapter's input."""
    encoder = load_clip_vision(model, device=device)
    features = encoder.encode(image.convert("RGB"))
    release_memory(resolve_device(device))
    return features
