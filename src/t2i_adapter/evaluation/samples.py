"""What an evaluation runs on: samples (prompt, condition maps, photo) and the variants compared.

Samples come from anywhere: the trainer's dataset readers (`training.evaluation_data`), fresh
shapes-world scenes (`demo.evaluate`), or code. Each is fitted to the evaluation size the way the
trainer fits its data: short side resized, centre cropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

from t2i_adapter.conditions.tensor import resize_condition

BASELINE_LABEL = "no adapter"


@dataclass
class EvalSample:
    """One prompt, its condition map per adapter, the photo they were made from (if known)."""

    name: str
    prompt: str
    conditions: list[Image.Image]
    image: Image.Image | None = None  # the real picture: FID's reference set, pose truth
    extras: dict[str, Any] = field(default_factory=dict)  # what a custom scorer reads (scene truth)


@dataclass(frozen=True)
class Variant:
    """One thing compared: a set of adapters (none: the baseline), optionally a training step."""

    label: str
    adapters: tuple[str, ...] = ()
    step: int | None = None

    @property
    def is_baseline(self) -> bool:
        return not self.adapters


def baseline() -> Variant:
    return Variant(BASELINE_LABEL)


def fit_sample(sample: EvalSample, size: int) -> EvalSample:
    """The sample at `size` x `size`: short side resized (photo bicubic, conditions content-aware), centred crop."""
    reference = sample.image or sample.conditions[0]
    width, height = reference.size
    scale = size / min(width, height)
    resized = (max(size, round(width * scale)), max(size, round(height * scale)))
    left, top = (resized[0] - size) // 2, (resized[1] - size) // 2
    box = (left, top, left + size, top + size)

    def fit_condition(condition: Image.Image) -> Image.Image:
        if condition.size == (size, size) and resized == (size, size):
            return condition
        return resize_condition(condition, *resized).crop(box)

    image = sample.image
    if image is not None and image.size != (size, size):
        image = image.convert("RGB").resize(resized, Image.Resampling.BICUBIC).crop(box)
    return replace(sample, conditions=[fit_condition(c) for c in sample.conditions], image=image)
