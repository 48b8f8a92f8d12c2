"""Validation images: the same prompts and conditions every N steps, to watch the adapter learn.

Images go to `<output_dir>/validation/step-<N>/<i>.png` and to TensorBoard. They are made with
`T2IAdapterPipeline` from a fixed seed, inside `torch.random.fork_rng`, so validation never
changes the training run's random numbers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from t2i_adapter.generation.pipeline import T2IAdapterPipeline
from t2i_adapter.generation.units import AdapterUnit
from t2i_adapter.io.images import load_image

GUIDANCE_SCALE = 7.5
VALIDATION_SEED = 1234


@dataclass
class ValidationSet:
    prompts: list[str]
    conditions: list[Image.Image]


def choose_validation_set(config, source, prepare, channels: int) -> ValidationSet:
    """The configured prompts/conditions, else the first two samples of the dataset."""
    mode = "L" if channels == 1 else "RGB"
    conditions = [load_image(path, mode=mode) for path in config.validation_conditions]
    prompts = list(config.validation_prompts)
    if not conditions and hasattr(source, "records") and len(source):
        for index in range(min(2, len(source))):
            prepared = prepare(source.load(index), rng=random.Random(0))
            pixels = (prepared.condition * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            conditions.append(Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, mode=mode))
            if len(prompts) < len(conditions):
                prompts.append(prepared.caption)
    if not conditions:
        return ValidationSet([], [])
    while len(prompts) < len(conditions):
        prompts.append(prompts[-1] if prompts else "")
    return ValidationSet(prompts[: len(conditions)], conditions)


@torch.no_grad()
def make_validation_images(
    base, adapter, validation: ValidationSet, *, resolution: int, steps: int, folder: Path
) -> list[Image.Image]:
    """One image per (prompt, condition), saved under `folder`."""
    was_training = adapter.training
    adapter.eval()
    images = []
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        pipeline = T2IAdapterPipeline(base)
        for index, (prompt, condition) in enumerate(
            zip(validation.prompts, validation.conditions, strict=True)
        ):
            output = pipeline(
                prompt,
                [AdapterUnit(adapter=adapter, condition=condition)],
                steps=steps,
                guidance_scale=GUIDANCE_SCALE,
                seed=VALIDATION_SEED,
                width=resolution,
                height=resolution,
            )
            image = output.images[0]
            image.save(folder / f"{index}.png")
            images.append(image)
    adapter.train(was_training)
    return images
