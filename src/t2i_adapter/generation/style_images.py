"""Reference image -> CLIP-vision hidden states, the style adapter's input.

The original style adapter reads `last_hidden_state` of CLIP ViT-L/14's vision tower
(`openai/clip-vit-large-patch14`): (N, 257, 1024) for a 224x224 crop, preprocessed with the
model's own CLIP image processor (resize short side, centre crop, CLIP mean/std).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from t2i_adapter.errors import MissingWeightsError, first_line


@dataclass
class StyleImageEncoder:
    """A CLIP vision model and its image processor."""

    model: Any  # transformers CLIPVisionModel
    processor: Any  # transformers CLIPImageProcessor

    @classmethod
    def load(cls, name: str, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        """Load from a hub id or a local folder (both the model and its preprocessor config)."""
        from transformers import CLIPImageProcessor, CLIPVisionModel

        try:
            model = CLIPVisionModel.from_pretrained(name, dtype=dtype)
            processor = CLIPImageProcessor.from_pretrained(name)
        except (OSError, ValueError) as error:
            raise MissingWeightsError(
                f"could not load the CLIP vision model '{name}' for the style adapter ({first_line(error)}); "
                f"download it once with network access or pass a local folder"
            ) from error
        model.requires_grad_(False).eval().to(device)
        return cls(model=model, processor=processor)

    @torch.no_grad()
    def encode(self, image: Image.Image) -> torch.Tensor:
        """(1, 257, width) hidden states of one RGB image."""
        pixels = self.processor(images=image.convert("RGB"), return_tensors="pt").pixel_values
        pixels = pixels.to(device=self.model.device, dtype=self.model.dtype)
        return self.model(pixel_values=pixels).last_hidden_state


class StyleEncoderCache:
    """Loads each CLIP vision model once, thread-safely."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._encoders: dict[tuple[str, str, str], StyleImageEncoder] = {}

    def get(self, name: str, *, dtype: torch.dtype, device: torch.device | str) -> StyleImageEncoder:
        key = (name, str(dtype), str(device))
        with self._lock:
            if key not in self._encoders:
                self._encoders[key] = StyleImageEncoder.load(name, dtype=dtype, device=device)
            return self._encoders[key]
