"""CLIP vision, the style adapter's eyes: a reference image -> hidden states `(1, 257, 1024)`.

The one place CLIP vision is loaded (`load_clip_vision`: a hub id or local folder, once per
process, like every preprocessor model) and run (`StyleImageEncoder.encode`, which generation
calls at sampling time); `encode_style_image` gives the features of a photo directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from t2i_adapter.conditions.model_loading import load_pretrained, release_memory
from t2i_adapter.conditions.style import DEFAULT_CLIP_VISION
from t2i_adapter.devices import resolve_device


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
