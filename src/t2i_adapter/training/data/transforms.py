"""Resize and crop an example to the training size; the condition gets exactly the same transform.

1. A condition whose size differs from its image's is first resized to the image's size.
2. Both are resized so the short side is `resolution` (image: bicubic; condition: the
   content-aware filter of `conditions.tensor.resize_condition`, so segmentation colours stay pure).
3. Both are cropped to `resolution` x `resolution` at the same corner (centre, or a random corner)
   and optionally flipped together.
4. A computed condition (`--cond-type canny` without condition files) is made from the cropped
   image, so it matches the pixels the model sees.

The random choices come from the `random.Random` passed in, seeded per sample by the caller, so a
sample's augmentation is reproducible (and cacheable).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

from t2i_adapter.conditions.tensor import condition_to_tensor, resize_condition
from t2i_adapter.training.data.example import Example


@dataclass
class PreparedExample:
    """Tensors for one sample, ready to batch."""

    pixels: torch.Tensor  # (3, R, R) in [-1, 1]
    condition: torch.Tensor  # (C, R, R) in [0, 1]
    caption: str
    original_size: tuple[int, int]  # (height, width) before resizing: SDXL micro-conditioning
    crop_top_left: tuple[int, int]  # (top, left) in the resized image
    where: str = ""  # the example's `where` ("photos/a.png", "data.jsonl:3"), for error messages


def resize_and_crop(
    image: Image.Image,
    condition: Image.Image | None,
    resolution: int,
    *,
    center_crop: bool,
    random_flip: bool,
    rng: random.Random,
) -> tuple[Image.Image, Image.Image | None, tuple[int, int]]:
    """The transformed image and condition, and the crop corner (top, left)."""
    # Draw every random number whatever the flags, so each sample always uses the same draws.
    crop_draw, flip_draw = rng.random(), rng.random()
    if condition is not None and condition.size != image.size:
        condition = resize_condition(condition, image.width, image.height)
    width, height = resized_size(image.size, resolution)
    if (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.BICUBIC)
        if condition is not None:
            condition = resize_condition(condition, width, height)
    top, left = crop_corner(width, height, resolution, crop_draw if not center_crop else None)
    box = (left, top, left + resolution, top + resolution)
    image = image.crop(box)
    condition = condition.crop(box) if condition is not None else None
    if random_flip and flip_draw < 0.5:
        image = ImageOps.mirror(image)
        condition = ImageOps.mirror(condition) if condition is not None else None
    return image, condition, (top, left)


def resized_size(size: tuple[int, int], resolution: int) -> tuple[int, int]:
    """(width, height) after scaling `size` so its short side is `resolution`."""
    scale = resolution / min(size)
    return max(resolution, round(size[0] * scale)), max(resolution, round(size[1] * scale))


def crop_corner(width: int, height: int, resolution: int, crop_draw: float | None) -> tuple[int, int]:
    """(top, left) of the square crop: the centre (`crop_draw` None), or where a draw in [0, 1) puts it."""
    if crop_draw is None:
        return (height - resolution) // 2, (width - resolution) // 2
    # one of them is 0: the short side fits
    return int(crop_draw * (height - resolution + 1)), int(crop_draw * (width - resolution + 1))


def center_crop_condition(condition: Image.Image, resolution: int) -> Image.Image:
    """What `resize_and_crop` with a centre crop does to a condition map that has its image's size."""
    width, height = resized_size(condition.size, resolution)
    condition = resize_condition(condition, width, height)
    top, left = crop_corner(width, height, resolution, None)
    return condition.crop((left, top, left + resolution, top + resolution))


def prepare_example(
    example: Example,
    *,
    resolution: int,
    condition_channels: int,
    center_crop: bool,
    random_flip: bool,
    rng: random.Random,
    preprocessor=None,
) -> PreparedExample:
    """Resize, crop and convert an `Example`; `preprocessor` computes the condition when it has none."""
    original_size = (example.image.height, example.image.width)
    image, condition, crop = resize_and_crop(
        example.image,
        example.condition,
        resolution,
        center_crop=center_crop,
        random_flip=random_flip,
        rng=rng,
    )
    if condition is None:
        condition = preprocessor(image)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
    return PreparedExample(
        pixels=pixels.float().div(127.5).sub(1.0),
        condition=condition_to_tensor(condition, condition_channels)[0],
        caption=example.caption,
        original_size=original_size,
        crop_top_left=crop,
        where=example.where,
    )
