"""Fidelity metrics: does a generated picture follow its condition and its prompt?

The condition is re-extracted from the picture by colour classification against a plain
background (the picture's border colour): every pixel far from the background is foreground and
gets the nearest named colour. From that label map come an object mask (scored by IoU against the
condition's mask), outlines (scored by edge F1 with a 1-pixel tolerance) and the colours present
(scored against the colours the prompt names).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from t2i_adapter.demo.world import COLORS
from t2i_adapter.evaluation import metrics as evaluation_metrics

# Pixels closer than this (RGB Euclidean distance) to the background colour are background.
BACKGROUND_DISTANCE = 80.0
# A colour counts as present when it covers at least this many pixels (at 64x64: a 5x5 blob).
MIN_COLOR_PIXELS = 25
NAMED_COLORS = dict(COLORS)


@dataclass
class Extraction:
    """What a picture shows: colour index per pixel (-1 background) and the colour names."""

    labels: np.ndarray  # (H, W) int, -1 = background, i = color_names[i]
    color_names: list[str]

    @property
    def mask(self) -> np.ndarray:
        return self.labels >= 0

    def edges(self) -> np.ndarray:
        return region_outlines(self.labels)

    def colors_present(self, min_pixels: int = MIN_COLOR_PIXELS) -> set[str]:
        counts = np.bincount(self.labels[self.labels >= 0].ravel(), minlength=len(self.color_names))
        return {name for name, count in zip(self.color_names, counts, strict=True) if count >= min_pixels}


# ---------------------------------------------------------------------------------------------
# Re-extraction
# ---------------------------------------------------------------------------------------------


def background_color(pixels: np.ndarray) -> np.ndarray:
    """The median colour of the one-pixel border: the plain background of a shapes picture."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]).astype(np.float32)
    return np.median(border, axis=0)


def extract(image: Image.Image, colors: dict[str, tuple[int, int, int]] | None = None) -> Extraction:
    """Classify every pixel as background or its nearest named colour."""
    colors = NAMED_COLORS if colors is None else colors
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)  # (H, W, 3)
    background = background_color(pixels)
    names = list(colors)
    palette = np.array([colors[name] for name in names], dtype=np.float32)  # (K, 3)
    distances = np.linalg.norm(pixels[:, :, None, :] - palette[None, None], axis=-1)  # (H, W, K)
    labels = distances.argmin(axis=-1)
    is_background = np.linalg.norm(pixels - background, axis=-1) < BACKGROUND_DISTANCE
    # A pixel nearer the background than any named colour is background too (soft edges, shading).
    is_background |= np.linalg.norm(pixels - background, axis=-1) < distances.min(axis=-1)
    labels = np.where(is_background, -1, labels)
    return Extraction(labels=labels, color_names=names)


def region_outlines(labels: np.ndarray) -> np.ndarray:
    """Foreground pixels with a 4-neighbour (or the border) of another label: (H, W) bool."""
    padded = np.pad(labels, 1, mode="constant", constant_values=-2)
    center = padded[1:-1, 1:-1]
    edges = np.zeros(labels.shape, dtype=bool)
    height, width = labels.shape
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        edges |= padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width] != center
    return edges & (labels >= 0)


def mask_from_condition(cond_type: str, condition: Image.Image) -> np.ndarray:
    """The object mask a condition image asks for (sketch/canny: filled outlines; others: non-black)."""
    array = np.asarray(condition.convert("L"))
    if cond_type in ("sketch", "canny"):
        return fill_outlines(array > 127)
    if cond_type == "color":
        return extract(condition).mask
    return array > 16


def fill_outlines(edges: np.ndarray) -> np.ndarray:
    """Outlines plus everything they enclose: flood the background from the border, keep the rest."""
    reachable = (~edges).astype(np.uint8)
    padded = np.pad(reachable, 1, mode="constant", constant_values=1)
    flood_mask = np.zeros((padded.shape[0] + 2, padded.shape[1] + 2), dtype=np.uint8)
    cv2.floodFill(padded, flood_mask, (0, 0), 2)
    outside = padded[1:-1, 1:-1] == 2
    return ~outside


def prompt_colors(prompt: str, colors: dict[str, tuple[int, int, int]] | None = None) -> set[str]:
    """The colour names a prompt mentions."""
    colors = NAMED_COLORS if colors is None else colors
    return {word for word in re.findall(r"[a-z]+", prompt.lower()) if word in colors}


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------


mask_iou = evaluation_metrics.binary_iou  # one IoU for the package, under the shapes world's name


def edge_f1(predicted: np.ndarray, target: np.ndarray, tolerance: int = 1) -> float:
    """Edge F1 with a 1-pixel tolerance by default (the shapes world's outlines are 1 px wide)."""
    return evaluation_metrics.edge_f1(predicted, target, tolerance)


def color_accuracy(present: set[str], wanted: set[str]) -> float:
    """Fraction of the prompt's colours that the picture shows; 1.0 when the prompt names none."""
    if not wanted:
        return 1.0
    return len(present & wanted) / len(wanted)


def object_color_accuracy(
    extraction: Extraction, object_masks: list[np.ndarray], object_colors: list[str]
) -> float:
    """Fraction of objects whose region is mostly (over its foreground pixels) their own colour."""
    if not object_masks:
        return 1.0
    correct = 0
    for mask, color in zip(object_masks, object_colors, strict=True):
        labels = extraction.labels[mask & (extraction.labels >= 0)]
        if labels.size and extraction.color_names[np.bincount(labels).argmax()] == color:
            correct += 1
    return correct / len(object_masks)
