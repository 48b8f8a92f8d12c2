"""The style condition: a reference photo seen the way CLIP ViT-L/14's vision tower sees it.

The style adapter reads no spatial map: it turns CLIP-vision hidden states `(N, 257, 1024)` of a
reference image into extra context tokens. This file is the one place CLIP vision is loaded
(`load_clip_vision`, once per process, like every preprocessor model) and run
(`StyleImageEncoder.encode`; generation calls it at sampling time). The registry gets the
`style` preprocessor, whose output is the 224x224 centre crop CLIP encodes (so `--save-cond` and
the web UI preview show what actually steers the image), and `encode_style_image` gives the
features of a photo directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from t2i_adapter.conditions.model_loading import load_pretrained, release_memory
from t2i_adapter.conditions.registry import register_condition
from t2i_adapter.devices import resolve_device
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


@dataclass
class StyleImageEncoder:
    """A CLIP vision model and its image processor (resize short side, centre crop, CLIP mean/std)."""

    model: Any  # transformers CLIPVisionModel
    processor: Any  # transformers CLIPImageProcessor

    @torch.no_grad()
    def encode(self, image: Image.Image) -> torch.Tensor:
        """(1, 257, width) hidden states of one RGB image."""
        pixels = self.processor(images=image.convert("RGB"), return_tensors="pt").pixel_values
        pixels = pixels.to(device=self.model.device, dtype=self.model.dtype)
        return self.model(pixel_values=pixels).last_hidden_state


def load_clip_vision(
    name_or_path: str = DEFAULT_CLIP_VISION,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> StyleImageEncoder:
    """The CLIP vision encoder for style images (hub id or local folder), loaded once per process."""
    # transformers' model classes take seconds to import: only when a style image is encoded
    from transformers import CLIPImageProcessor, CLIPVisionModel

    loaded = load_pretrained(
        str(name_or_path),
        CLIPVisionModel,
        what="CLIP vision",
        processor_class=CLIPImageProcessor,
        device=device,
        dtype=dtype,
        how="--clip-vision PATH",
    )
    return StyleImageEncoder(model=loaded.model, processor=loaded.processor)


def encode_style_image(
    image: Image.Image, model: str = DEFAULT_CLIP_VISION, device: str | None = None
) -> torch.Tensor:
    """CLIP-vision `last_hidden_state` of one image: (1, 257, 1024) for ViT-L/14, the style adapter's input."""
    features = load_clip_vision(model, device=device).encode(image.convert("RGB"))
    release_memory(resolve_device(device))
    return features
