"""The shapes world's evaluation: the demo's samples and scorer, run by `t2i_adapter.evaluation`.

Samples are fresh shapes-world scenes (exact truth: object masks, outlines, colours) or a folder
of `<stem>.<cond_type>.png` + `<stem>.txt` pairs (truth derived from the condition itself). The
runner generates each sample from the prompt alone and with the adapters, from the same seed;
`score` re-extracts the picture by colour (`metrics.extract`) and scores object mask IoU, edge
F1 (1 px tolerance), colour accuracy against the prompt, and, where the scene says which object
is where, per-object colour accuracy. Works with any model `generate()` can load.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from t2i_adapter.demo import metrics
from t2i_adapter.demo.world import make_scene
from t2i_adapter.errors import InputFileError, T2IAdapterError
from t2i_adapter.evaluation import BASELINE_LABEL, EvalResult, EvalSample, EvalSettings, Variant, baseline
from t2i_adapter.evaluation import run_evaluation as run_protocol
from t2i_adapter.evaluation.report import table, write_report
from t2i_adapter.io.images import load_image

# Evaluation scenes come from seeds below the training range (see train_base.TRAIN_SEED_OFFSET).
EVAL_FIRST_SEED = 0
SHAPES_METRICS = "shapes"  # the --metric name of the scorer below
METRIC_NAMES = ("mask_iou", "edge_f1", "color_accuracy", "object_color_accuracy")
METRIC_TITLES = {
    "mask_iou": "object mask IoU",
    "edge_f1": "edge F1 (1 px)",
    "color_accuracy": "colour accuracy (prompt)",
    "object_color_accuracy": "colour accuracy (per object)",
}
METRIC_NOTES = (
    "Shapes metrics: the condition is re-extracted from each picture by colour classification "
    "against its plain background; *object mask IoU* compares the foreground with the "
    "condition's objects, *edge F1* the region outlines with the condition's outlines "
    "(1 px tolerance), *colour accuracy (prompt)* is the share of the prompt's colours "
    "present (25 px or more), *per object* the share of objects whose region is mostly "
    "their own colour."
)


# ---------------------------------------------------------------------------------------------
# Samples
# ---------------------------------------------------------------------------------------------


def synthetic_samples(cond_types: list[str], num: int, first_seed: int = EVAL_FIRST_SEED) -> list[EvalSample]:
    """Fresh shapes-world scenes with their exact conditions and truth."""
    samples = []
    for seed in range(first_seed, first_seed + num):
        scene = make_scene(seed)
        truth = {
            "target_mask": scene.foreground_mask(),
            "target_edges": np.asarray(scene.condition("sketch")) > 0,
            "object_masks": [scene.labels == k for k in range(1, len(scene.objects) + 1)],
            "object_colors": [obj.color for obj in scene.objects],
        }
        conditions = [scene.condition(cond_type) for cond_type in cond_types]
        samples.append(EvalSample(f"scene_{seed:06d}", scene.caption, conditions, scene.image(), truth))
    return samples


def is_pairs_folder(location: str | Path, cond_type: str) -> bool:
    """True for a folder of `<stem>.<cond_type>.png` + `<stem>.txt` pairs without photos beside them."""
    folder = Path(location)
    if not folder.is_dir():
        return False
    first = next(iter(sorted(folder.rglob(f"*.{cond_type}.png"))), None)
    if first is None:
        return False
    stem = first.name[: -len(f".{cond_type}.png")]
    return not any(first.with_name(stem + suffix).is_file() for suffix in (".png", ".jpg", ".jpeg", ".webp"))


def folder_samples(folder: str | Path, cond_types: list[str], num: int) -> list[EvalSample]:
    """`<stem>.<cond_type>.png` + `<stem>.txt` pairs (the training folder layout also works)."""
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
        lines = caption_file.read_text(encoding="utf-8").splitlines()
        prompt = lines[0].strip() if lines else ""
        conditions = []
        for cond_type in cond_types:
            path = file.with_name(f"{stem}.{cond_type}.png")
            if not path.is_file():
                raise InputFileError(path, f"missing: the {cond_type} condition of '{stem}'")
            conditions.append(load_image(path))
        samples.append(
            EvalSample(stem, prompt, conditions, extras=_truth_from_conditions(cond_types, conditions))
        )
    return samples


def _truth_from_conditions(cond_types: list[str], conditions: list[Image.Image]) -> dict[str, Any]:
    structural = [i for i, c in enumerate(cond_types) if c != "color"] or [0]
    mask = metrics.mask_from_condition(cond_types[structural[0]], conditions[structural[0]])
    edges = None
    for cond_type, condition in zip(cond_types, conditions, strict=True):
        if cond_type in ("sketch", "canny"):
            edges = np.asarray(condition.convert("L")) > 127
    if edges is None:
        edges = metrics.region_outlines(np.where(mask, 0, -1))
    return {"target_mask": mask, "target_edges": edges}


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


def score(sample: EvalSample, image: Image.Image) -> dict[str, float]:
    """All shapes metrics of one generated picture against its sample's truth (in METRIC_NAMES order)."""
    truth = sample.extras
    found = metrics.extract(image)
    scores = {}
    target_mask = truth.get("target_mask")
    if target_mask is not None and found.labels.shape != target_mask.shape:
        # A model that makes other sizes: score at the truth's size.
        image = image.resize((target_mask.shape[1], target_mask.shape[0]), Image.Resampling.NEAREST)
        found = metrics.extract(image)
    if target_mask is not None:
        scores["mask_iou"] = metrics.mask_iou(found.mask, target_mask)
    if truth.get("target_edges") is not None:
        scores["edge_f1"] = metrics.edge_f1(found.edges(), truth["target_edges"])
    wanted = metrics.prompt_colors(sample.prompt)
    scores["color_accuracy"] = metrics.color_accuracy(found.colors_present(), wanted)
    if truth.get("object_masks"):
        scores["object_color_accuracy"] = metrics.object_color_accuracy(
            found, truth["object_masks"], truth["object_colors"]
        )
    return scores


# ---------------------------------------------------------------------------------------------
# The demo's entry point (the rebuild and `t2i-adapter evaluate` without --data)
# ---------------------------------------------------------------------------------------------


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
    result: EvalResult = field(repr=False)
    seconds: float = 0.0
    report_path: Path | None = None
    grid_path: Path | None = None

    def table(self) -> str:
        """A Markdown table: one row per metric, baseline beside the adapter(s)."""
        return table(self.result, METRIC_TITLES)


def shapes_settings(config: EvalConfig, *, data: str) -> EvalSettings:
    """The runner's settings for a demo evaluation: baseline and the adapter set, shapes metrics only."""
    label = " + ".join(config.adapters)
    return EvalSettings(
        model=config.model,
        cond_types=list(config.cond_types),
        variants=[baseline(), Variant(label, tuple(config.adapters))],
        metrics=[SHAPES_METRICS],
        steps=config.steps,
        guidance_scale=config.guidance_scale,
        weight=config.weight,
        seed=config.seed,
        negative_prompt=config.negative_prompt,
        device=config.device,
        data=data,
    )


def run_evaluation(
    config: EvalConfig,
    *,
    samples: list[EvalSample] | None = None,
    progress: Callable[[int, int], None] | None = None,
    write: bool = True,
) -> EvalReport:
    """Generate, score and (when `write` and `config.out_dir`) write the report, grid and scores."""
    if samples is None:
        if config.data:
            samples = folder_samples(config.data, config.cond_types, config.num)
        else:
            samples = synthetic_samples(config.cond_types, config.num)
    data = (
        f"folder {config.data}"
        if config.data
        else f"fresh shapes-world scenes (seeds from {EVAL_FIRST_SEED})"
    )
    settings = shapes_settings(config, data=data)
    out_dir = config.out_dir if write else None
    result = run_protocol(
        settings,
        samples,
        out_dir=out_dir,
        scorers=[score],
        scorer_metrics=[SHAPES_METRICS],
        progress=progress,
    )
    label = settings.variants[1].label
    rows = {
        mode: [_scores(r) for r in result.rows if r["variant"] == v]
        for mode, v in (("without", BASELINE_LABEL), ("with", label))
    }
    report = EvalReport(
        config=config,
        means={"without": result.summary[BASELINE_LABEL], "with": result.summary[label]},
        per_sample=rows,
        result=result,
        seconds=result.seconds,
    )
    if out_dir:
        title = f"Fidelity evaluation: {label} on {config.model}"
        files = write_report(result, out_dir, title=title, extra_titles=METRIC_TITLES, notes=METRIC_NOTES)
        report.report_path, report.grid_path = files["report"], files["grid"]
        scores = {"config": asdict(config), "means": report.means, "per_sample": report.per_sample}
        Path(out_dir, "scores.json").write_text(json.dumps(scores, indent=1) + "\n", encoding="utf-8")
    return report


def _scores(row: dict[str, Any]) -> dict[str, float]:
    return {name: row[name] for name in METRIC_NAMES if name in row}
