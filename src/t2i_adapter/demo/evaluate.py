"""Fidelity evaluation: generate with and without the adapter(s), re-extract, score, report.

Samples are fresh shapes-world scenes (exact truth: object masks, outlines, colours) or a folder
of `<stem>.<cond_type>.png` + `<stem>.txt` pairs (truth derived from the condition itself). Each
sample is generated twice with the same seed, once from the prompt alone and once with the
adapters; the picture's condition is re-extracted (`metrics.extract`) and scored: object mask IoU,
edge F1 (1 px tolerance), colour accuracy against the prompt, and, where the scene says which
object is where, per-object colour accuracy. Works with any model `generate()` can load.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from t2i_adapter.demo import metrics
from t2i_adapter.demo.world import make_scene
from t2i_adapter.errors import InputFileError, T2IAdapterError
from t2i_adapter.evaluation.grid import image_grid

# Evaluation scenes come from seeds below the training range (see train_base.TRAIN_SEED_OFFSET).
EVAL_FIRST_SEED = 0
GRID_SAMPLES = 8
METRIC_NAMES = ("mask_iou", "edge_f1", "color_accuracy", "object_color_accuracy")
METRIC_TITLES = {
    "mask_iou": "object mask IoU",
    "edge_f1": "edge F1 (1 px)",
    "color_accuracy": "colour accuracy (prompt)",
    "object_color_accuracy": "colour accuracy (per object)",
}


@dataclass
class EvalSample:
    """One prompt with its condition maps (one per adapter) and what a faithful picture shows."""

    name: str
    prompt: str
    conditions: list[Image.Image]
    target_mask: np.ndarray | None
    target_edges: np.ndarray | None
    object_masks: list[np.ndarray] = field(default_factory=list)
    object_colors: list[str] = field(default_factory=list)


@dataclass
class EvalConfig:
    """What to evaluate: one model, one or more adapters (each with its condition type)."""

    model: str
    adapters: list[str]
    cond_types: list[str]
    num: int = 200
    data: str | None = None
    steps: int = 20
    guidance_scale: float = 7.5
    weight: float = 1.0
    seed: int = 0
    device: str | None = None
    out_dir: str | None = None
    negative_prompt: str = ""
    batch_size: int = 25

    def __post_init__(self) -> None:
        if not self.adapters:
            raise T2IAdapterError("evaluation needs at least one adapter")
        if len(self.cond_types) == 1 and len(self.adapters) > 1:
            raise T2IAdapterError("give one --cond-type per --adapter")
        if len(self.cond_types) != len(self.adapters):
            raise T2IAdapterError(
                f"{len(self.adapters)} adapters but {len(self.cond_types)} condition types; give one per adapter"
            )
        if self.num < 1:
            raise T2IAdapterError(f"num must be at least 1, not {self.num}")


@dataclass
class EvalReport:
    """Mean scores per mode (`without`, `with`), per-sample scores, and where the files went."""

    config: EvalConfig
    means: dict[str, dict[str, float]]
    per_sample: dict[str, list[dict[str, float]]]
    seconds: float = 0.0
    report_path: Path | None = None
    grid_path: Path | None = None

    def table(self) -> str:
        """A Markdown table: one row per metric, baseline beside the adapter(s)."""
        label = " + ".join(self.config.adapters)
        lines = [f"| metric | without adapter | with {label} |", "|---|---|---|"]
        for name in METRIC_NAMES:
            if name in self.means["with"]:
                lines.append(
                    f"| {METRIC_TITLES[name]} | {self.means['without'][name]:.3f} | {self.means['with'][name]:.3f} |"
                )
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Samples
# ---------------------------------------------------------------------------------------------


def synthetic_samples(cond_types: list[str], num: int, first_seed: int = EVAL_FIRST_SEED) -> list[EvalSample]:
    """Fresh shapes-world scenes with their exact conditions and truth."""
    samples = []
    for seed in range(first_seed, first_seed + num):
        scene = make_scene(seed)
        samples.append(
            EvalSample(
                name=f"scene_{seed:06d}",
                prompt=scene.caption,
                conditions=[scene.condition(cond_type) for cond_type in cond_types],
                target_mask=scene.foreground_mask(),
                target_edges=np.asarray(scene.condition("sketch")) > 0,
                object_masks=[scene.labels == k for k in range(1, len(scene.objects) + 1)],
                object_colors=[obj.color for obj in scene.objects],
            )
        )
    return samples


def folder_samples(folder: str | Path, cond_types: list[str], num: int) -> list[EvalSample]:
    """`<stem>.<cond_type>.png` + `<stem>.txt` pairs (the training folder layout also works)."""
    from t2i_adapter.io.images import load_image

    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(folder, "no such folder of condition/prompt pairs")
    first = cond_types[0]
    condition_files = sorted(folder.rglob(f"*.{first}.png"))
    if not condition_files:
        raise InputFileError(folder, f"no '<name>.{first}.png' condition files in this folder")
    samples = []
    for file in condition_files[:num]:
        stem = file.name[: -len(f".{first}.png")]
        caption_file = file.with_name(stem + ".txt")
        if not caption_file.is_file():
            raise InputFileError(caption_file, "missing: every condition needs a caption file beside it")
        prompt = (
            caption_file.read_text(encoding="utf-8").splitlines()[0].strip()
            if caption_file.stat().st_size
            else ""
        )
        conditions = []
        for cond_type in cond_types:
            path = file.with_name(f"{stem}.{cond_type}.png")
            if not path.is_file():
                raise InputFileError(path, f"missing: the {cond_type} condition of '{stem}'")
            conditions.append(load_image(path))
        structural = [i for i, c in enumerate(cond_types) if c != "color"] or [0]
        mask = metrics.mask_from_condition(cond_types[structural[0]], conditions[structural[0]])
        edges = None
        for cond_type, condition in zip(cond_types, conditions, strict=True):
            if cond_type in ("sketch", "canny"):
                edges = np.asarray(condition.convert("L")) > 127
        if edges is None:
            edges = metrics.region_outlines(np.where(mask, 0, -1))
        samples.append(EvalSample(stem, prompt, conditions, mask, edges))
    return samples


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


def score(image: Image.Image, sample: EvalSample) -> dict[str, float]:
    """All metrics of one generated picture against its sample's truth."""
    found = metrics.extract(image)
    scores = {
        "color_accuracy": metrics.color_accuracy(found.colors_present(), metrics.prompt_colors(sample.prompt))
    }
    target_size = None if sample.target_mask is None else sample.target_mask.shape
    if target_size is not None and found.labels.shape != target_size:
        # A model that makes other sizes: score at the truth's size.
        image = image.resize((target_size[1], target_size[0]), Image.Resampling.NEAREST)
        found = metrics.extract(image)
    if sample.target_mask is not None:
        scores["mask_iou"] = metrics.mask_iou(found.mask, sample.target_mask)
    if sample.target_edges is not None:
        scores["edge_f1"] = metrics.edge_f1(found.edges(), sample.target_edges)
    if sample.object_masks:
        scores["object_color_accuracy"] = metrics.object_color_accuracy(
            found, sample.object_masks, sample.object_colors
        )
    return scores


def _means(rows: list[dict[str, float]]) -> dict[str, float]:
    names = [name for name in METRIC_NAMES if rows and all(name in row for row in rows)]
    return {name: float(np.mean([row[name] for row in rows])) for name in names}


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def _generate_batch(
    config: EvalConfig, samples: list[EvalSample], first_index: int, cache
) -> tuple[list[Image.Image], list[Image.Image]]:
    """The batch from its prompts alone, then with the adapters (the same starting noise)."""
    import torch

    from t2i_adapter.conditions.tensor import condition_to_tensor
    from t2i_adapter.generation.api import resolve_device
    from t2i_adapter.generation.units import AdapterUnit

    device = resolve_device(config.device)
    pipeline = cache.pipeline(config.model, dtype=torch.float32, device=device)
    width, height = samples[0].conditions[0].size
    units = []
    for position, name in enumerate(config.adapters):
        adapter = cache.adapter(name, dtype=torch.float32, device=str(pipeline.execution_device))
        channels = getattr(adapter, "in_condition_channels", None) or 3
        # One condition per prompt: the pipeline keeps a batch of maps as it is (B, C, H, W).
        batch = torch.cat(
            [condition_to_tensor(s.conditions[position], channels, size=(width, height)) for s in samples]
        )
        units.append(AdapterUnit(adapter=adapter, condition=batch, weight=config.weight, name=name))
    options = dict(
        negative_prompt=[config.negative_prompt] * len(samples),
        steps=config.steps,
        guidance_scale=config.guidance_scale,
        seed=config.seed + first_index,
        width=width,
        height=height,
    )
    prompts = [sample.prompt for sample in samples]
    plain = pipeline(prompts, [], **options).images
    steered = pipeline(prompts, units, **options).images
    return plain, steered


def run_evaluation(
    config: EvalConfig,
    *,
    samples: list[EvalSample] | None = None,
    progress: Callable[[int, int], None] | None = None,
    write: bool = True,
) -> EvalReport:
    """Generate, score and (when `write` and `config.out_dir`) write report.md, grid.png, scores.json."""
    import time

    from t2i_adapter.generation.api import ModelCache

    started = time.perf_counter()
    if samples is None:
        if config.data:
            samples = folder_samples(config.data, config.cond_types, config.num)
        else:
            samples = synthetic_samples(config.cond_types, config.num)
    cache = ModelCache()
    per_sample: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
    grid_rows = []
    for first in range(0, len(samples), config.batch_size):
        batch = samples[first : first + config.batch_size]
        plain_images, steered_images = _generate_batch(config, batch, first, cache)
        for offset, (sample, plain, steered) in enumerate(
            zip(batch, plain_images, steered_images, strict=True)
        ):
            per_sample["without"].append(score(plain, sample))
            per_sample["with"].append(score(steered, sample))
            if first + offset < GRID_SAMPLES:
                grid_rows.append([*sample.conditions, plain, steered])
        if progress is not None:
            progress(first + len(batch), len(samples))
    report = EvalReport(
        config=config,
        means={mode: _means(rows) for mode, rows in per_sample.items()},
        per_sample=per_sample,
        seconds=time.perf_counter() - started,
    )
    if write and config.out_dir:
        _write(report, samples, grid_rows)
    return report


def _write(report: EvalReport, samples: list[EvalSample], grid_rows: list[list[Image.Image]]) -> None:
    from t2i_adapter.io.atomic import atomic_write

    config = report.config
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    columns = [*config.cond_types, "without adapter", "with adapter"]
    grid = image_grid(
        grid_rows, columns=columns, row_labels=[s.prompt for s in samples[: len(grid_rows)]], cell=128
    )
    report.grid_path = out / "grid.png"
    grid.save(report.grid_path)
    report.report_path = out / "report.md"
    source = (
        f"folder {config.data}" if config.data else f"{len(samples)} fresh shapes-world scenes (seeds from 0)"
    )
    text = "\n".join(
        [
            f"# Fidelity evaluation: {' + '.join(config.adapters)} on {config.model}",
            "",
            f"Samples: {source}. Condition types: {', '.join(config.cond_types)}. "
            f"Sampler: DDIM, {config.steps} steps, guidance {config.guidance_scale}, adapter weight "
            f"{config.weight}, batches of {config.batch_size} seeded {config.seed} + first index (the same "
            "noise with and without). "
            f"Took {report.seconds:.0f} s.",
            "",
            report.table(),
            "",
            "Metrics: the condition is re-extracted from each picture by colour classification "
            "against its plain background; *object mask IoU* compares the foreground with the "
            "condition's objects, *edge F1* the region outlines with the condition's outlines "
            "(1 px tolerance), *colour accuracy (prompt)* is the share of the prompt's colours "
            "present (25 px or more), *per object* the share of objects whose region is mostly "
            "their own colour.",
            "",
            "![grid](grid.png)",
            "",
        ]
    )
    with atomic_write(report.report_path, "w", encoding="utf-8") as handle:
        handle.write(text)
    scores = {"config": asdict(config), "means": report.means, "per_sample": report.per_sample}
    with atomic_write(out / "scores.json", "w", encoding="utf-8") as handle:
        handle.write(json.dumps(scores, indent=1) + "\n")
