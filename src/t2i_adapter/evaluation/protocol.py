"""The controllability protocol: which metric scores which condition, and the published figures.

ControlNet++ (Li et al. 2024, "ControlNet++: Improving Conditional Controls with Efficient
Consistency Feedback", Table 1) regenerates from each condition of an evaluation set (20 DDIM-like
steps, guidance 7.5, 4 images per condition, negative prompt "worst quality, low quality"),
re-extracts the condition from every picture and scores agreement: segmentation mIoU, canny F1,
HED / line-art SSIM, depth RMSE on 8-bit maps. `PUBLISHED` holds its figures for the released
T2I-Adapters; `protocol_differences` says how a run here departs from that protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from t2i_adapter.errors import T2IAdapterError, UnknownNameError
from t2i_adapter.evaluation import metrics


@dataclass(frozen=True)
class Metric:
    """A score: its title, direction, and the condition families it applies to (None: any picture)."""

    name: str
    title: str
    higher_is_better: bool
    families: tuple[str, ...] | None = None
    over_the_set: bool = False  # computed over all pictures at once, not averaged per sample


METRICS = {
    metric.name: metric
    for metric in (
        Metric("f1", "F1 (per pixel)", True, ("edges", "lines")),
        Metric("ssim", "SSIM", True, ("edges", "lines", "depth", "color")),
        Metric("rmse", "RMSE (8-bit)", False, ("edges", "lines", "depth", "color")),
        Metric("si_rmse", "scale-and-shift-invariant RMSE (8-bit)", False, ("depth",)),
        Metric("miou", "mIoU", True, ("seg",), over_the_set=True),
        Metric("pck", "PCK@0.1", True, ("pose",)),
        Metric("oks", "OKS", True, ("pose",)),
        Metric("clip", "CLIP score", True),
        Metric("fid", "FID", False, over_the_set=True),
        Metric("kid", "KID (x1000)", False, over_the_set=True),
    )
}
# What a condition family is scored with when --metric is not given.
DEFAULT_METRICS = {
    "edges": ("f1",),
    "lines": ("ssim",),
    "depth": ("rmse", "si_rmse"),
    "color": ("rmse",),
    "seg": ("miou",),
    "pose": ("pck", "oks"),
}
# `--metric rmse` also reports the aligned RMSE on depth; `--metric pck` also OKS.
COMPANIONS = {"rmse": ("si_rmse",), "pck": ("oks",)}
PICTURE_METRICS = ("clip", "fid", "kid")


def metric_key(metric: str, cond_type: str | None = None) -> str:
    """The column name of a score: `f1/canny` for condition metrics, `clip` for the others."""
    return f"{metric}/{cond_type}" if cond_type else metric


def condition_metrics(family: str, requested: list[str] | None) -> list[str]:
    """The condition metrics for one condition family: its defaults, or the requested ones that apply."""
    if requested is None:
        return list(DEFAULT_METRICS[family])
    chosen = []
    for name in requested:
        for candidate in (name, *COMPANIONS.get(name, ())):
            metric = METRICS[candidate]
            if metric.families and family in metric.families and candidate not in chosen:
                chosen.append(candidate)
    return chosen


def check_metric_names(requested: list[str], extra: tuple[str, ...] = ()) -> None:
    """Unknown metric names are an error listing the valid ones."""
    for name in requested:
        if name not in METRICS and name not in extra:
            raise UnknownNameError("metric", name, [*METRICS, *extra])


def score_condition(metric: str, predicted: Any, truth: Any) -> float:
    """One condition metric of one picture (maps 0-255, label maps, or lists of people)."""
    if metric == "f1":
        return metrics.edge_f1(np.asarray(predicted) > 127, np.asarray(truth) > 127)
    if metric == "ssim":
        return metrics.ssim(predicted, truth)
    if metric == "rmse":
        return metrics.rmse(predicted, truth)
    if metric == "si_rmse":
        return metrics.aligned_rmse(predicted, truth)
    if metric == "miou":
        return metrics.image_mean_iou(predicted, truth)
    if metric == "pck":
        return metrics.keypoint_pck(predicted, truth)
    if metric == "oks":
        return metrics.keypoint_oks(predicted, truth)
    raise T2IAdapterError(f"'{metric}' is not a condition metric")


# ---------------------------------------------------------------------------------------------
# The published figures and how a run differs from their protocol
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    """One figure of ControlNet++ Table 1 for a released T2I-Adapter."""

    base: str  # "sd15" or "sdxl"
    cond_type: str  # the condition type (registry name) whose protocol matches
    metric: str
    value: float  # in our units: F1 and mIoU as fractions, RMSE on the 0-255 scale
    dataset: str
    notes: str


PUBLISHED_SOURCE = "ControlNet++ (Li et al. 2024), Table 1"
# Shown beside a run only where the condition is the same kind of map. Not here, though published:
# SD1.5 ADE20K mIoU 0.1261 (ADE20K label maps; the seg condition here is COCO-Stuff colours) and
# SDXL line-art SSIM 0.639 (MS-SSIM; there is no line-art preprocessor here). See docs/evaluation.md.
PUBLISHED = (
    Published("sd15", "canny", "f1", 0.2365, "MultiGen-20M canny eval", "kornia canny 0.1/0.2"),
    Published("sd15", "depth", "rmse", 48.40, "MultiGen-20M depth eval", "DPT-Large re-extraction"),
    Published("sdxl", "canny", "f1", 0.2801, "MultiGen-20M canny eval", "kornia canny 0.1/0.2"),
    Published("sdxl", "depth", "rmse", 39.75, "MultiGen-20M depth eval", "DPT-Large re-extraction"),
)
PROTOCOL = {
    "steps": 20,
    "guidance_scale": 7.5,
    "images_per_cond": 4,
    "resolution": {"sd15": 512, "sdxl": 1024},
    # the diffusers adapter pipelines' own schedulers: SD1.5's config (PNDM, PLMS steps); SDXL: Euler a
    "scheduler": {"sd15": "plms", "sdxl": "euler_a"},
}
PROTOCOL_NEGATIVE_PROMPT = "worst quality, low quality"


def published_figure(base: str | None, cond_type: str, metric: str) -> Published | None:
    """The published figure for this base model family, condition type and metric, if any."""
    for figure in PUBLISHED:
        if (figure.base, figure.cond_type, figure.metric) == (base, cond_type, metric):
            return figure
    return None


def protocol_differences(
    base: str | None,
    *,
    steps: int,
    guidance_scale: float,
    images_per_cond: int,
    resolution: int,
    scheduler: str,
    negative_prompt: str,
    num_samples: int,
    data: str,
) -> list[str]:
    """How this run departs from the published protocol, one phrase per difference."""
    differences = []
    expected_scheduler = PROTOCOL["scheduler"].get(base or "")
    if expected_scheduler and scheduler != expected_scheduler:
        differences.append(f"sampler {scheduler} (published: {expected_scheduler})")
    if steps != PROTOCOL["steps"]:
        differences.append(f"{steps} steps (published: {PROTOCOL['steps']})")
    if guidance_scale != PROTOCOL["guidance_scale"]:
        differences.append(f"guidance {guidance_scale} (published: {PROTOCOL['guidance_scale']})")
    if images_per_cond != PROTOCOL["images_per_cond"]:
        differences.append(
            f"{images_per_cond} image(s) per condition (published: {PROTOCOL['images_per_cond']})"
        )
    expected = PROTOCOL["resolution"].get(base or "")
    if expected and resolution != expected:
        differences.append(f"{resolution} px (published: {expected} px)")
    if negative_prompt != PROTOCOL_NEGATIVE_PROMPT:
        shown = f"'{negative_prompt}'" if negative_prompt else "none"
        differences.append(f"negative prompt {shown} (published: '{PROTOCOL_NEGATIVE_PROMPT}')")
    differences.append(f"data: {num_samples} samples of {data} (published: the datasets named per row)")
    differences.append(
        "re-extraction with this package's preprocessors and their default models (canny: OpenCV at "
        "the preprocessor's thresholds; depth: MiDaS DPT-Hybrid, min-max normalised; SSIM, not MS-SSIM)"
    )
    return differences
