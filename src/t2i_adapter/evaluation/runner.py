"""`run_evaluation`: generate from every sample with every variant, read the condition back, score.

Each variant (the no-adapter baseline, an adapter set, other weights or checkpoints of one run)
generates `images_per_cond` pictures per sample through `generation.api.generate`, sample `i`
always from seed `seed + i`, so every variant starts from the same noise. Pictures are kept in a
`PictureCache` under the output folder: a rerun (after a crash, or with another metric) reads
them instead of generating. Then each picture's condition is re-extracted (`Reextractor`) and
scored; CLIP score per picture, mIoU / FID / KID over the whole set; custom `scorers` (the
shapes world's) add their own columns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from t2i_adapter.errors import T2IAdapterError
from t2i_adapter.evaluation import image_quality
from t2i_adapter.evaluation.image_cache import PictureCache, picture_key
from t2i_adapter.evaluation.image_quality import DEFAULT_CLIP_MODEL
from t2i_adapter.evaluation.metrics import SegmentationTally
from t2i_adapter.evaluation.protocol import (
    METRICS,
    PICTURE_METRICS,
    check_metric_names,
    condition_metrics,
    metric_key,
    score_condition,
)
from t2i_adapter.evaluation.reextract import Reextractor, condition_family
from t2i_adapter.evaluation.samples import EvalSample, Variant, complete_conditions, fit_sample
from t2i_adapter.generation.api import TORCH_DTYPES, ModelCache, generate, resolve_device
from t2i_adapter.generation.settings import AdapterSpec, GenerationSettings, LoraSpec

Scorer = Callable[[EvalSample, Image.Image], dict[str, float]]
ROW_FIELDS = ("variant", "step", "sample", "picture", "seed", "prompt")
GRID_SAMPLES = 8
PICTURES_FOLDER = "pictures"


@dataclass
class EvalSettings:
    """How to generate and what to score; `variants` are compared on the same samples and seeds."""

    model: str
    cond_types: list[str]  # the condition type of each adapter slot (composed adapters: several)
    variants: list[Variant]
    metrics: list[str] | None = None  # None: each condition type's default (see protocol.py)
    images_per_cond: int = 1
    steps: int = 20
    guidance_scale: float = 7.5
    weight: float = 1.0
    seed: int = 0
    negative_prompt: str = ""
    scheduler: str = "ddim"
    eta: float | None = None  # the scheduler's step noise (DDIM's eta, TCD's gamma); None: its own
    loras: list[LoraSpec] = field(default_factory=list)  # on the base model, for every variant
    vae: str | None = None  # another VAE in place of the base model's, for every variant
    resolution: int | None = None  # None: the base model's native resolution
    dtype: str = "float32"
    device: str | None = None
    # each slot's preprocessor options: computing missing conditions and re-extracting (thresholds, model)
    cond_options: list[dict[str, Any]] = field(default_factory=list)
    clip_model: str = DEFAULT_CLIP_MODEL
    fid_model: str | None = None  # a TorchScript Inception; None: torch's hub cache
    data: str = "samples given in code"  # what the samples are, for the report

    def __post_init__(self) -> None:
        self.cond_options = [dict(o) for o in self.cond_options] or [{} for _ in self.cond_types]
        if len(self.cond_options) != len(self.cond_types):
            raise T2IAdapterError(
                f"{len(self.cond_options)} option sets for {len(self.cond_types)} conditions"
            )
        if not self.variants:
            raise T2IAdapterError("evaluation needs at least one variant (adapter set or baseline)")
        for variant in self.variants:
            if variant.adapters and len(variant.adapters) != len(self.cond_types):
                raise T2IAdapterError(
                    f"'{variant.label}' has {len(variant.adapters)} adapter(s) for {len(self.cond_types)} "
                    "condition type(s); give one --cond-type per --adapter"
                )
        if len({variant.label for variant in self.variants}) != len(self.variants):
            raise T2IAdapterError("two compared variants have the same label")
        if self.images_per_cond < 1:
            raise T2IAdapterError(f"images per condition must be at least 1, not {self.images_per_cond}")


@dataclass
class EvalResult:
    """Per-picture rows, per-variant summaries, and what the run did."""

    settings: EvalSettings
    rows: list[dict[str, Any]]
    summary: dict[str, dict[str, float]]  # variant label -> metric key -> value
    class_iou: dict[str, dict[str, dict[int, float]]]  # variant label -> condition -> class id -> IoU
    metric_keys: list[str]
    resolution: int
    base_family: str | None  # "sd15", "sdxl", or None (other models, the demo)
    num_samples: int
    generated: int = 0
    reused: int = 0
    seconds: float = 0.0
    grid_rows: list[list[Image.Image | None]] = field(default_factory=list, repr=False)
    grid_columns: list[str] = field(default_factory=list)
    grid_labels: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Set-up: metrics per condition slot, models
# ---------------------------------------------------------------------------------------------


def plan_metrics(settings: EvalSettings, scorer_metrics: Sequence[str] = ()) -> list[tuple[int, str]]:
    """(slot, metric) pairs: condition metrics per adapter slot, picture metrics with slot -1."""
    requested = settings.metrics
    if requested is not None:
        check_metric_names(requested, extra=tuple(scorer_metrics))
    wanted = None if requested is None else [m for m in requested if m in METRICS and METRICS[m].families]
    plan: list[tuple[int, str]] = []
    if wanted is None or wanted:
        for slot, cond_type in enumerate(settings.cond_types):
            family = condition_family(cond_type)
            plan += [(slot, metric) for metric in condition_metrics(family, wanted)]
    for name in wanted or []:
        if not any(metric == name for _, metric in plan):
            raise T2IAdapterError(
                f"metric '{name}' does not apply to condition type(s) {', '.join(settings.cond_types)} "
                f"(it scores {', '.join(METRICS[name].families)} conditions)"
            )
    return plan + [(-1, name) for name in PICTURE_METRICS if requested and name in requested]


def _base_family(base) -> str | None:
    """`sdxl`, `sd15` (SD1.x: 768-wide text features), or None for any other model."""
    if base.is_sdxl:
        return "sdxl"
    if base.name != "demo" and getattr(base.unet.config, "cross_attention_dim", None) == 768:
        return "sd15"
    return None


# ---------------------------------------------------------------------------------------------
# Generation (through the cache)
# ---------------------------------------------------------------------------------------------


def _generation_settings(settings: EvalSettings, variant: Variant, prompt: str, seed: int, size: int):
    return GenerationSettings(
        model=settings.model,
        prompt=prompt,
        adapters=[
            AdapterSpec(adapter=name, cond_type="none", weight=settings.weight) for name in variant.adapters
        ],
        negative_prompt=settings.negative_prompt,
        steps=settings.steps,
        guidance_scale=settings.guidance_scale,
        seed=seed,
        num_images=settings.images_per_cond,
        width=size,
        height=size,
        scheduler=settings.scheduler,
        eta=settings.eta,
        loras=[LoraSpec(lora.path, lora.scale) for lora in settings.loras],
        vae=settings.vae,
        dtype=settings.dtype,
        device=settings.device,
    )


def _pictures(
    settings: EvalSettings, variant: Variant, sample: EvalSample, seed: int, size: int, cache, pictures
) -> tuple[list[Image.Image], bool]:
    """The variant's pictures of `sample` and whether they were generated (False: read back)."""
    generation = _generation_settings(settings, variant, sample.prompt, seed, size)
    conditions = list(sample.conditions) if variant.adapters else []
    key = picture_key(generation, conditions) if pictures is not None else None
    if key is not None:
        stored = pictures.load(key, settings.images_per_cond)
        if stored is not None:
            return stored, False
    images = generate(generation, condition_images=conditions, cache=cache).images
    if key is not None:
        pictures.save(key, images)
    return images, True


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def run_evaluation(
    settings: EvalSettings,
    samples: Sequence[EvalSample],
    *,
    out_dir: str | Path | None = None,
    scorers: Sequence[Scorer] = (),
    scorer_metrics: Sequence[str] = (),
    cache=None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Generate, re-extract and score every sample with every variant (pictures cached in `out_dir`)."""
    started = time.perf_counter()
    if not samples:
        raise T2IAdapterError("no samples to evaluate")
    plan = plan_metrics(settings, scorer_metrics)
    names = {metric for _, metric in plan}
    if ("fid" in names or "kid" in names) and any(s.image is None for s in samples):
        raise T2IAdapterError("FID/KID compare with the real pictures: every sample needs its photo")
    reextractors = {
        slot: Reextractor(settings.cond_types[slot], settings.cond_options[slot])
        for slot, _ in plan
        if slot >= 0
    }
    cache = cache or ModelCache(max_adapters=max(1, len(settings.cond_types)))
    device = str(resolve_device(settings.device))
    base = cache.pipeline(
        settings.model, dtype=TORCH_DTYPES[settings.dtype], device=device, vae=settings.vae
    ).base
    size = settings.resolution or base.native_resolution
    samples = [
        complete_conditions(fit_sample(sample, size), settings.cond_types, settings.cond_options)
        for sample in samples
    ]
    pictures = PictureCache(Path(out_dir) / PICTURES_FOLDER) if out_dir else None
    quality = _QualityModels(settings, names, samples)

    truths = [
        {slot: rex.truth(sample.conditions[slot], sample.image) for slot, rex in reextractors.items()}
        for sample in samples
    ]
    result = EvalResult(
        settings=settings,
        rows=[],
        summary={},
        class_iou={},
        metric_keys=[],
        resolution=size,
        base_family=_base_family(base),
        num_samples=len(samples),
        grid_rows=[
            [*s.conditions, *([s.image] if s.image is not None else [])] for s in samples[:GRID_SAMPLES]
        ],
        grid_columns=[
            *settings.cond_types,
            *(["photo"] if samples[0].image is not None else []),
            *(v.label for v in settings.variants),
        ],  # fmt: skip
        grid_labels=[s.prompt for s in samples[:GRID_SAMPLES]],
    )
    run = _Run(settings, plan, reextractors, truths, scorers, quality, cache, pictures, size)
    done, total = 0, len(settings.variants) * len(samples)
    for variant in settings.variants:
        tallies = {slot: SegmentationTally() for slot, metric in plan if metric == "miou"}
        features = []
        for index, sample in enumerate(samples):
            images = run.sample(result, variant, index, sample, tallies, features)
            if index < GRID_SAMPLES:
                result.grid_rows[index].append(images[0])
            done += 1
            if progress is not None:
                progress(done, total)
        _summarise(result, variant, plan, tallies, features, quality)
    result.seconds = time.perf_counter() - started
    return result


@dataclass
class _Run:
    """What every sample of a run is generated and scored with."""

    settings: EvalSettings
    plan: list[tuple[int, str]]
    reextractors: dict[int, Reextractor]
    truths: list[dict[int, Any]]
    scorers: Sequence[Scorer]
    quality: _QualityModels
    cache: Any
    pictures: PictureCache | None
    size: int

    def sample(self, result: EvalResult, variant: Variant, index: int, sample: EvalSample, tallies, features):
        """Generate (or read back) one sample's pictures, add a row per picture; returns the pictures."""
        seed = self.settings.seed + index
        images, generated = _pictures(
            self.settings, variant, sample, seed, self.size, self.cache, self.pictures
        )
        result.generated += len(images) if generated else 0
        result.reused += 0 if generated else len(images)
        clip_scores = self.quality.clip(images, [sample.prompt] * len(images)) if self.quality.clip else None
        if self.quality.inception is not None:
            features.append(self.quality.inception(images))
        for picture_index, picture in enumerate(images):
            row = {"variant": variant.label, "step": variant.step, "sample": sample.name,
                   "picture": picture_index, "seed": seed, "prompt": sample.prompt}  # fmt: skip
            row.update(self.condition_scores(picture, sample, self.truths[index], tallies))
            if clip_scores is not None:
                row["clip"] = clip_scores[picture_index]
            for scorer in self.scorers:
                row.update(scorer(sample, picture))
            result.rows.append(row)
        return images

    def condition_scores(self, picture: Image.Image, sample: EvalSample, truth: dict[int, Any], tallies):
        """The condition metrics of one picture (and its share of the set-level mIoU)."""
        predictions = {
            slot: rex.predict(picture, sample.conditions[slot].size)
            for slot, rex in self.reextractors.items()
        }
        scores = {}
        for slot, metric in self.plan:
            if slot < 0:
                continue
            key = metric_key(metric, self.settings.cond_types[slot])
            scores[key] = score_condition(metric, predictions[slot], truth[slot])
            if metric == "miou":
                tallies[slot].add(predictions[slot], truth[slot])
        return scores


class _QualityModels:
    """The CLIP scorer and Inception network, loaded only when their metrics are asked for."""

    def __init__(self, settings: EvalSettings, names: set[str], samples: list[EvalSample]):
        self.clip = (
            image_quality.ClipScorer(settings.clip_model, settings.device) if "clip" in names else None
        )
        self.inception = None
        self.real_features = None
        if "fid" in names or "kid" in names:
            self.inception = image_quality.load_inception(settings.fid_model, settings.device)
            self.real_features = np.concatenate(
                [self.inception([s.image for s in samples[i : i + 16]]) for i in range(0, len(samples), 16)]
            )


def _summarise(result: EvalResult, variant: Variant, plan, tallies, features, quality) -> None:
    """Means of the per-picture scores, and the metrics computed over the whole set."""
    rows = [row for row in result.rows if row["variant"] == variant.label]
    keys = list(dict.fromkeys(key for row in rows for key in row if key not in ROW_FIELDS))
    summary = {key: float(np.nanmean([row.get(key, np.nan) for row in rows])) for key in keys}
    class_iou = {}
    for slot, tally in tallies.items():
        cond_type = result.settings.cond_types[slot]
        summary[metric_key("miou", cond_type)] = tally.mean_iou()
        class_iou[cond_type] = tally.class_iou()
    names = {metric for _, metric in plan}
    if features:
        generated = np.concatenate(features)
        if "fid" in names:
            summary["fid"] = image_quality.frechet_distance(quality.real_features, generated)
        if "kid" in names:
            summary["kid"] = image_quality.kernel_distance(quality.real_features, generated)
    result.summary[variant.label] = summary
    result.class_iou[variant.label] = class_iou
    for key in summary:
        if key not in result.metric_keys:
            result.metric_keys.append(key)
