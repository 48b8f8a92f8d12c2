"""What an evaluation runs on: samples (prompt, condition maps, photo) and the variants compared.

Samples come from anywhere: the trainer's dataset readers (`training.evaluation_data`), fresh
shapes-world scenes (`demo.evaluate`), or code. Each is fitted to the evaluation size the way the
trainer fits its data: short side resized, centre cropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

from t2i_adapter.conditions.registry import preprocess
from t2i_adapter.conditions.tensor import resize_condition
from t2i_adapter.errors import T2IAdapterError

BASELINE_LABEL = "no adapter"


@dataclass
class EvalSample:
    """One prompt, its condition map per adapter, the photo they were made from (if known).

    A condition of None is computed from the photo by that slot's preprocessor once the photo is
    at the evaluation size (as the protocol computes canny on the resized photo).
    """

    name: str
    prompt: str
    conditions: list[Image.Image | None]
    image: Image.Image | None = None  # the real picture: FID's reference set, pose truth
    extras: dict[str, Any] = field(default_factory=dict)  # what a custom scorer reads (scene truth)


@dataclass(frozen=True)
class Variant:
    """One thing compared: a set of adapters (none: the baseline), or a checkpoint of a training run."""

    label: str
    adapters: tuple[str, ...] = ()
    step: int | None = None
    run: str | None = None  # the training run a checkpoint belongs to (one line per run in the chart)

    @property
    def is_baseline(self) -> bool:
        return not self.adapters


def baseline() -> Variant:
    return Variant(BASELINE_LABEL)


def fit_sample(sample: EvalSample, size: int) -> EvalSample:
    """The sample at `size` x `size`: short side resized (photo bicubic, conditions content-aware), centred crop."""
    reference = sample.image or sample.conditions[0]
    if reference is None:
        raise T2IAdapterError(f"sample '{sample.name}' has neither a photo nor a condition map")
    width, height = reference.size
    scale = size / min(width, height)
    resized = (max(size, round(width * scale)), max(size, round(height * scale)))
    left, top = (resized[0] - size) // 2, (resized[1] - size) // 2
    box = (left, top, left + size, top + size)

    def fit_condition(condition: Image.Image | None) -> Image.Image | None:
        if condition is None or (condition.size == (size, size) and resized == (size, size)):
            return condition
        return resize_condition(condition, *resized).crop(box)

    image = sample.image
    if image is not None and image.size != (size, size):
        image = image.convert("RGB").resize(resized, Image.Resampling.BICUBIC).crop(box)
    return replace(sample, conditions=[fit_condition(c) for c in sample.conditions], image=image)


def complete_conditions(
    sample: EvalSample, cond_types: list[str], options: list[dict[str, Any]]
) -> EvalSample:
    """Conditions left as None computed from the (fitted) photo by each slot's preprocessor."""
    if all(condition is not None for condition in sample.conditions):
        return sample
    if sample.image is None:
        raise T2IAdapterError(f"sample '{sample.name}' has no condition map and no photo to compute it from")
    conditions = [
        preprocess(cond_type, sample.image, **slot_options) if condition is None else condition
        for condition, cond_type, slot_options in zip(sample.conditions, cond_types, options, strict=True)
    ]
    return replace(sample, conditions=conditions)
