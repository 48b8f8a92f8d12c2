"""Agreement scores between a re-extracted condition and its truth: pure functions on arrays.

Our own code for the small formulas (IoU, F1, RMSE, PCK, OKS, CLIP score) because each is a few
lines of numpy over per-sample arrays, while torchmetrics' classes assume fixed class counts and
batched tensors; SSIM, FID and KID, which are not one-liners, come from torchmetrics.

Conventions: binary maps are bool arrays `(H, W)`; grey or colour maps are arrays in their own
units (8-bit maps: 0-255) of shape `(H, W)` or `(H, W, C)`; label maps are int arrays `(H, W)`
with `IGNORE_LABEL` where a pixel has no class; people are `(K, 2)` keypoint arrays in pixels with
`(K,)` visibility flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

IGNORE_LABEL = -1
# COCO's per-keypoint falloff constants (nose, eyes, ears, shoulders, elbows, wrists, hips, knees,
# ankles), from the COCO keypoint evaluation: sigma_i, with k_i = 2 * sigma_i in OKS.
COCO_KEYPOINT_SIGMAS = (
    np.array(
        [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89]
    )
    / 10.0
)
PCK_ALPHA = 0.1  # a keypoint is correct within 0.1 x the longer side of the person's box


# ---------------------------------------------------------------------------------------------
# Binary maps: masks and edges
# ---------------------------------------------------------------------------------------------


def binary_iou(predicted: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union of two boolean masks; 1.0 when both are empty."""
    predicted, target = predicted.astype(bool), target.astype(bool)
    union = np.logical_or(predicted, target).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(predicted, target).sum() / union)


def edge_f1(predicted: np.ndarray, target: np.ndarray, tolerance: int = 0) -> float:
    """F1 of edge pixels; a pixel matches when the other map has an edge within `tolerance` px.

    `tolerance=0` is the plain per-pixel F1 that ControlNet++ reports for canny (torchmetrics'
    BinaryF1Score over the flattened maps). Both maps empty: 1.0; one empty: 0.0.
    """
    predicted, target = predicted.astype(bool), target.astype(bool)
    if not predicted.any() and not target.any():
        return 1.0
    if not predicted.any() or not target.any():
        return 0.0
    kernel = np.ones((2 * tolerance + 1, 2 * tolerance + 1), dtype=np.uint8)
    near_target = cv2.dilate(target.astype(np.uint8), kernel) > 0
    near_predicted = cv2.dilate(predicted.astype(np.uint8), kernel) > 0
    precision = (predicted & near_target).sum() / predicted.sum()
    recall = (target & near_predicted).sum() / target.sum()
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


# ---------------------------------------------------------------------------------------------
# Grey and colour maps
# ---------------------------------------------------------------------------------------------


def ssim(predicted: np.ndarray, target: np.ndarray, data_range: float = 255.0) -> float:
    """Structural similarity (Wang et al. 2004; 11-px Gaussian window, sigma 1.5) via torchmetrics."""
    import torch
    from torchmetrics.functional.image import (  # here, not at the top: 2 s of import only SSIM needs
        structural_similarity_index_measure,
    )

    def as_batch(array: np.ndarray) -> torch.Tensor:  # (H, W[, C]) -> (1, C, H, W)
        tensor = torch.from_numpy(np.asarray(array, dtype=np.float32) / data_range)
        return (tensor[None, None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)[None]).double()

    if predicted.shape != target.shape:
        raise ValueError(f"SSIM of maps of different shapes {predicted.shape} and {target.shape}")
    return float(structural_similarity_index_measure(as_batch(predicted), as_batch(target), data_range=1.0))


def rmse(predicted: np.ndarray, target: np.ndarray) -> float:
    """Root mean square difference, in the maps' units (8-bit maps: 0-255, as ControlNet++'s depth RMSE)."""
    difference = np.asarray(predicted, dtype=np.float64) - np.asarray(target, dtype=np.float64)
    return float(np.sqrt(np.mean(difference**2)))


def aligned_rmse(predicted: np.ndarray, target: np.ndarray) -> float:
    """Scale-and-shift-invariant RMSE: `predicted` fitted to `target` by least squares (a*p + b) first.

    Relative depth is only known up to scale and shift (MiDaS, Ranftl et al. 2020, align the
    same way before scoring), so this separates a wrong layout from a different depth range.
    """
    p = np.asarray(predicted, dtype=np.float64).ravel()
    t = np.asarray(target, dtype=np.float64).ravel()
    design = np.stack([p, np.ones_like(p)], axis=1)  # (N, 2)
    (scale, shift), *_ = np.linalg.lstsq(design, t, rcond=None)
    return float(np.sqrt(np.mean((scale * p + shift - t) ** 2)))


# ---------------------------------------------------------------------------------------------
# Label maps: mean IoU over the whole set (as mmsegmentation computes it)
# ---------------------------------------------------------------------------------------------


@dataclass
class SegmentationTally:
    """Per-class intersections and unions summed over every image, then IoU per class and mIoU."""

    intersections: dict[int, int] = field(default_factory=dict)
    unions: dict[int, int] = field(default_factory=dict)

    def add(self, predicted: np.ndarray, target: np.ndarray) -> None:
        """Count one image; pixels whose target is `IGNORE_LABEL` are left out."""
        keep = target != IGNORE_LABEL
        predicted, target = predicted[keep], target[keep]
        for label in np.union1d(np.unique(predicted), np.unique(target)):
            label = int(label)
            if label == IGNORE_LABEL:  # predicted pixels of no known class only count in the unions
                continue
            in_predicted, in_target = predicted == label, target == label
            self.intersections[label] = self.intersections.get(label, 0) + int(
                (in_predicted & in_target).sum()
            )
            self.unions[label] = self.unions.get(label, 0) + int((in_predicted | in_target).sum())

    def merge(self, other: SegmentationTally) -> None:
        for label, value in other.intersections.items():
            self.intersections[label] = self.intersections.get(label, 0) + value
        for label, value in other.unions.items():
            self.unions[label] = self.unions.get(label, 0) + value

    def class_iou(self, classes: set[int] | None = None) -> dict[int, float]:
        """IoU of each class the targets contain (or of `classes`); a class never seen has none."""
        labels = sorted(classes if classes is not None else self.unions)
        return {
            label: self.intersections.get(label, 0) / self.unions[label]
            for label in labels
            if self.unions.get(label)
        }

    def mean_iou(self, classes: set[int] | None = None) -> float:
        """Mean of the per-class IoUs; nan when there is no class to average."""
        values = list(self.class_iou(classes).values())
        return float(np.mean(values)) if values else float("nan")


def image_mean_iou(predicted: np.ndarray, target: np.ndarray) -> float:
    """mIoU of one image over the classes its target contains (for per-sample rows)."""
    tally = SegmentationTally()
    tally.add(predicted, target)
    present = {int(label) for label in np.unique(target) if label != IGNORE_LABEL}
    return tally.mean_iou(present) if present else float("nan")


# ---------------------------------------------------------------------------------------------
# Keypoints: PCK and COCO's OKS, people matched greedily by OKS
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """One person's keypoints in pixels `(K, 2)` and which of them were found `(K,)` bool."""

    keypoints: np.ndarray
    visible: np.ndarray

    def box_size(self) -> tuple[float, float]:
        """Width and height of the box around the visible keypoints (at least 1 px each)."""
        points = self.keypoints[self.visible]
        if len(points) == 0:
            return 1.0, 1.0
        width, height = points.max(axis=0) - points.min(axis=0)
        return max(float(width), 1.0), max(float(height), 1.0)


def object_keypoint_similarity(predicted: Person, truth: Person, sigmas: np.ndarray | None = None) -> float:
    """COCO OKS: mean over the truth's visible keypoints of exp(-d^2 / (2 s^2 k^2)), s^2 = box area."""
    sigmas = COCO_KEYPOINT_SIGMAS if sigmas is None else sigmas
    visible = truth.visible
    if not visible.any():
        return float("nan")
    width, height = truth.box_size()
    area = width * height
    distances = np.sum((predicted.keypoints - truth.keypoints) ** 2, axis=1)  # (K,) squared pixels
    per_point = np.exp(-distances / (2.0 * area * (2.0 * sigmas) ** 2 + np.finfo(float).eps))
    per_point = np.where(predicted.visible, per_point, 0.0)
    return float(per_point[visible].mean())


def match_people(predicted: list[Person], truth: list[Person]) -> list[tuple[Person, Person | None]]:
    """Each true person with the predicted one of highest OKS (greedy, each used once), or None."""
    pairs = []
    free = list(range(len(predicted)))
    for person in truth:
        scores = [object_keypoint_similarity(predicted[i], person) for i in free]
        if scores and np.nanmax(scores) > 0:
            best = free.pop(int(np.nanargmax(scores)))
            pairs.append((person, predicted[best]))
        else:
            pairs.append((person, None))
    return pairs


def keypoint_pck(predicted: list[Person], truth: list[Person], alpha: float = PCK_ALPHA) -> float:
    """Share of the truth's visible keypoints found within `alpha` x the person's box (longer side)."""
    correct = total = 0
    for person, match in match_people(predicted, truth):
        visible = person.visible
        total += int(visible.sum())
        if match is None:
            continue
        threshold = alpha * max(person.box_size())
        distances = np.linalg.norm(match.keypoints - person.keypoints, axis=1)
        correct += int((visible & match.visible & (distances <= threshold)).sum())
    return correct / total if total else float("nan")


def keypoint_oks(predicted: list[Person], truth: list[Person]) -> float:
    """Mean OKS of the true people with their matched prediction (0 for a person not found)."""
    scores = [
        0.0 if match is None else object_keypoint_similarity(match, person)
        for person, match in match_people(predicted, truth)
        if person.visible.any()
    ]
    return float(np.mean(scores)) if scores else float("nan")


# ---------------------------------------------------------------------------------------------
# Prompt agreement
# ---------------------------------------------------------------------------------------------


def clip_score(image_embeds: np.ndarray, text_embeds: np.ndarray) -> np.ndarray:
    """CLIP score (Hessel et al. 2021, as torchmetrics computes it): 100 * max(cos(image, text), 0)."""
    image_embeds = image_embeds / np.linalg.norm(image_embeds, axis=-1, keepdims=True)
    text_embeds = text_embeds / np.linalg.norm(text_embeds, axis=-1, keepdims=True)
    return 100.0 * np.maximum(np.sum(image_embeds * text_embeds, axis=-1), 0.0)
