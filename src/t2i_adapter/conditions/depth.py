"""Depth maps from a photo: MiDaS DPT-Hybrid (what the depth adapter was trained on) and Depth-Anything.

Both run through transformers' depth-estimation models (`AutoModelForDepthEstimation`), so any
DPT / Depth-Anything / ZoeDepth checkpoint on the hub or on disk works with `model=`.

The released depth adapter saw MiDaS output min-max normalised per image to [0, 1], near bright,
as 3 identical channels (REFERENCE.md section 4). MiDaS, DPT and relative Depth-Anything predict
relative inverse depth (bigger = nearer), so normalising keeps that polarity; metric models
(ZoeDepth, metric Depth-Anything) predict distance (bigger = farther) and are inverted first.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
from PIL import Image

from t2i_adapter.conditions.model_loading import (
    DEFAULT_DETECT_RESOLUTION,
    PretrainedModel,
    bounded,
    load_pretrained,
    release_memory,
    restore_size,
)
from t2i_adapter.conditions.registry import register_batch, register_condition

MIDAS_MODEL = "Intel/dpt-hybrid-midas"
# The Small V2 model is Apache-2.0; the Base/Large Depth-Anything-V2 weights are non-commercial.
DEPTH_ANYTHING_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"


def load_depth_model(name_or_path: str, device: str | None = None) -> PretrainedModel:
    """A transformers depth-estimation model + its image processor, loaded once per process."""
    # transformers' model classes take seconds to import: only when this model is loaded
    from transformers import AutoModelForDepthEstimation

    return load_pretrained(name_or_path, AutoModelForDepthEstimation, what="depth", device=device)


def is_metric(model: torch.nn.Module) -> bool:
    """True when the model predicts distance (far = big) rather than relative inverse depth."""
    config = model.config
    return config.model_type == "zoedepth" or getattr(config, "depth_estimation_type", "") == "metric"


def estimate_depth(loaded: PretrainedModel, image: Image.Image) -> np.ndarray:
    """Depth of `image` at its own size, min-max normalised to [0, 1] with near = 1: (H, W) float32."""
    return estimate_depths(loaded, [image])[0]


def estimate_depths(loaded: PretrainedModel, images: list[Image.Image]) -> list[np.ndarray]:
    """`estimate_depth` of several images; those whose model inputs share a shape run as one batch."""
    inputs = [loaded.processor(images=image, return_tensors="pt")["pixel_values"] for image in images]
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, pixel_values in enumerate(inputs):  # (1, 3, h, w) each
        groups.setdefault(tuple(pixel_values.shape), []).append(index)
    depths: list[np.ndarray | None] = [None] * len(images)
    for members in groups.values():
        pixel_values = torch.cat([inputs[i] for i in members]).to(loaded.device, loaded.dtype)  # (B, 3, h, w)
        sizes = [(images[i].height, images[i].width) for i in members]
        with torch.inference_mode():
            outputs = loaded.model(pixel_values=pixel_values)
            predicted = _post_process(loaded.processor, outputs, sizes)  # B x (H_i, W_i)
        for index, depth in zip(members, predicted, strict=True):
            depth = depth.float().cpu().numpy()
            depths[index] = normalise(-depth if is_metric(loaded.model) else depth)
        del outputs, pixel_values
    release_memory(loaded.device)
    return depths


def _post_process(processor, outputs, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    post = getattr(processor, "post_process_depth_estimation", None)
    if post is None:  # an older or custom processor: scale the raw prediction ourselves
        depth = outputs.predicted_depth.unsqueeze(1)  # (B, 1, h, w)
        return [
            torch.nn.functional.interpolate(depth[i : i + 1], size=size, mode="bicubic", align_corners=False)[
                0, 0
            ]
            for i, size in enumerate(sizes)
        ]
    kwargs = {"target_sizes": sizes}
    if "source_sizes" in inspect.signature(post).parameters:  # ZoeDepth pads; this crops it off
        kwargs["source_sizes"] = sizes
    return [
        result["predicted_depth"].reshape(size)
        for result, size in zip(post(outputs, **kwargs), sizes, strict=True)
    ]


def normalise(depth: np.ndarray) -> np.ndarray:
    """Min-max normalisation to [0, 1] as the MiDaS annotator does; a flat map becomes all zeros."""
    low, high = float(depth.min()), float(depth.max())
    if not np.isfinite(low) or not np.isfinite(high) or high - low < 1e-8:
        return np.zeros_like(depth, dtype=np.float32)
    return ((depth - low) / (high - low)).astype(np.float32)


def depth_image(depth: np.ndarray) -> Image.Image:
    """A [0, 1] depth map as the 3-channel 8-bit image the depth adapter reads."""
    gray = np.clip(np.rint(depth * 255.0), 0, 255).astype(np.uint8)  # (H, W)
    return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2), mode="RGB")


def _depth_conditions(
    images: list[Image.Image], model: str, detect_resolution: int, device: str | None
) -> list[Image.Image]:
    loaded = load_depth_model(model, device=device)
    small = [bounded(image, detect_resolution) for image in images]
    return [
        restore_size(depth_image(depth), image.size)
        for depth, image in zip(estimate_depths(loaded, small), images, strict=True)
    ]


# ---------------------------------------------------------------------------------------------
# Preprocessors
# ---------------------------------------------------------------------------------------------


@register_condition(
    "depth",
    channels=3,
    description=f"MiDaS depth ({MIDAS_MODEL}), min-max normalised, near bright (the depth adapter's input)",
    needs_weights=True,
    aliases=("midas", "depth_midas"),
)
def depth(
    image: Image.Image,
    model: str | None = None,
    detect_resolution: int = DEFAULT_DETECT_RESOLUTION,
    device: str | None = None,
) -> Image.Image:
    """Monocular depth with MiDaS DPT-Hybrid (Ranftl et al. 2021) or any transformers depth model."""
    return _depth_conditions([image], model or MIDAS_MODEL, detect_resolution, device)[0]


@register_batch("depth")
def depth_batch(
    images: list[Image.Image],
    model: str | None = None,
    detect_resolution: int = DEFAULT_DETECT_RESOLUTION,
    device: str | None = None,
) -> list[Image.Image]:
    """`depth` on several images, batched through the model."""
    return _depth_conditions(images, model or MIDAS_MODEL, detect_resolution, device)


@register_condition(
    "depth_anything",
    channels=3,
    description=f"Depth-Anything V2 depth ({DEPTH_ANYTHING_MODEL}), normalised like MiDaS, near bright",
    needs_weights=True,
    aliases=("depth_anything_v2",),
)
def depth_anything(
    image: Image.Image,
    model: str | None = None,
    detect_resolution: int = DEFAULT_DETECT_RESOLUTION,
    device: str | None = None,
) -> Image.Image:
    """Monocular depth with Depth Anything V2 (Yang et al. 2024), MiDaS-style output."""
    return _depth_conditions([image], model or DEPTH_ANYTHING_MODEL, detect_resolution, device)[0]


@register_batch("depth_anything")
def depth_anything_batch(
    images: list[Image.Image],
    model: str | None = None,
    detect_resolution: int = DEFAULT_DETECT_RESOLUTION,
    device: str | None = None,
) -> list[Image.Image]:
    """`depth_anything` on several images, batched through the model."""
    return _depth_conditions(images, model or DEPTH_ANYTHING_MODEL, detect_resolution, device)
