"""The report of an evaluation: a Markdown table people can compare, and the files behind it.

`write_report(result, out_dir)` writes:

- `report.md`: one row per metric, one column per variant, and the published figure beside them
  where the published protocol scores the same thing on the same base model family, followed by
  how this run departs from that protocol;
- `grid.png`: condition(s), photo and each variant's first picture for the first samples;
- `samples.csv`: every picture's scores;
- `summary.json`: the settings, the per-variant scores, per-class IoU;
- `metrics_by_step.png`: each metric against the training step, when several variants are
  checkpoints of one run.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

from t2i_adapter.conditions.registry import get_preprocessor
from t2i_adapter.conditions.segmentation import COCO_STUFF_LABELS
from t2i_adapter.evaluation.chart import draw_panel, stack_panels
from t2i_adapter.evaluation.grid import image_grid
from t2i_adapter.evaluation.protocol import (
    METRICS,
    PUBLISHED_SOURCE,
    protocol_differences,
    published_figure,
)
from t2i_adapter.evaluation.runner import ROW_FIELDS, EvalResult
from t2i_adapter.io.atomic import atomic_write

BASE_TITLES = {"sd15": "T2I-Adapter SD1.5", "sdxl": "T2I-Adapter SDXL"}


def metric_title(key: str, extra_titles: dict[str, str] | None = None) -> str:
    """`f1/canny` -> `F1 (per pixel), canny ↑`; keys of custom scorers from `extra_titles`."""
    name, _, cond_type = key.partition("/")
    if name in METRICS:
        metric = METRICS[name]
        arrow = "↑" if metric.higher_is_better else "↓"
        return f"{metric.title}{', ' + cond_type if cond_type else ''} {arrow}"
    return (extra_titles or {}).get(key, key)


def format_value(value: float | None) -> str:
    if value is None or value != value:
        return "–"
    return f"{value:.2f}" if abs(value) >= 10 else f"{value:.3f}"


def _published(result: EvalResult, key: str):
    name, _, cond_type = key.partition("/")
    if not cond_type or result.base_family is None:
        return None
    return published_figure(result.base_family, get_preprocessor(cond_type).name, name)


def table(result: EvalResult, extra_titles: dict[str, str] | None = None) -> str:
    """The Markdown table: metrics down, variants across, then the published figure (if any)."""
    labels = list(result.summary)
    published = {key: _published(result, key) for key in result.metric_keys}
    has_published = any(published.values())
    header = ["metric", *labels] + (
        [f"published, {BASE_TITLES[result.base_family]}"] if has_published else []
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in result.metric_keys:
        cells = [metric_title(key, extra_titles), *(format_value(result.summary[v].get(key)) for v in labels)]
        if has_published:
            figure = published[key]
            cells.append(f"{figure.value:.4g} ({figure.dataset})" if figure else "")  # as published
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _description(result: EvalResult) -> str:
    settings = result.settings
    last_seed = settings.seed + result.num_samples - 1
    negative = f"'{settings.negative_prompt}'" if settings.negative_prompt else "none"
    return (
        f"Samples: {result.num_samples} of {settings.data}, fitted to {result.resolution}x{result.resolution} "
        f"(short side resized, centre crop). {settings.images_per_cond} picture(s) per condition from seed "
        f"{settings.seed} + sample index (seeds {settings.seed}-{last_seed}, the same for every column). "
        f"Sampler {settings.scheduler}{_eta_and_loras(settings)}, {settings.steps} steps, "
        f"guidance {settings.guidance_scale}, adapter "
        f"weight {settings.weight}, negative prompt {negative}, {settings.dtype}. Took {result.seconds:.0f} s: "
        f"{result.generated} pictures generated, {result.reused} read back from the picture cache."
    )


def _eta_and_loras(settings) -> str:
    """` (eta 0.5, LoRA a.safetensors at 0.8)`: what the run set beyond the sampler's name."""
    parts = [] if settings.eta is None else [f"eta {settings.eta:g}"]
    parts += [f"LoRA {lora.path} at {lora.scale:g}" for lora in settings.loras]
    return f" ({', '.join(parts)})" if parts else ""


def _protocol_notes(result: EvalResult) -> list[str]:
    figures = [f for f in (_published(result, key) for key in result.metric_keys) if f]
    if not figures:
        return []
    settings = result.settings
    differences = protocol_differences(
        result.base_family,
        steps=settings.steps,
        guidance_scale=settings.guidance_scale,
        images_per_cond=settings.images_per_cond,
        resolution=result.resolution,
        scheduler=settings.scheduler,
        negative_prompt=settings.negative_prompt,
        num_samples=result.num_samples,
        data=settings.data,
    )
    lines = [
        f"Published figures: {PUBLISHED_SOURCE}, for the released TencentARC adapters "
        f"({'; '.join(f'{f.dataset}: {f.notes}' for f in figures)}).",
        "",
        "This run differs from that protocol in:",
        "",
    ]
    return lines + [f"- {difference}" for difference in differences] + [""]


def write_report(
    result: EvalResult,
    out_dir: str | Path,
    *,
    title: str = "",
    extra_titles: dict[str, str] | None = None,
    notes: str = "",
) -> dict[str, Path]:
    """Write report.md, grid.png, samples.csv, summary.json (and metrics_by_step.png); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"report": out / "report.md", "grid": out / "grid.png", "samples": out / "samples.csv"}
    files["summary"] = out / "summary.json"
    grid = image_grid(result.grid_rows, columns=result.grid_columns, row_labels=result.grid_labels, cell=128)
    with atomic_write(files["grid"]) as handle:
        grid.save(handle, format="PNG")
    chart = step_chart(result, extra_titles)
    if chart is not None:
        files["steps"] = out / "metrics_by_step.png"
        with atomic_write(files["steps"]) as handle:
            chart.save(handle, format="PNG")
    settings = result.settings
    heading = title or f"Evaluation: {', '.join(result.summary)} on {settings.model}"
    lines = [f"# {heading}", "", _description(result), "", table(result, extra_titles), ""]
    lines += ["↑ higher is better, ↓ lower is better; – not defined for that column.", ""]
    lines += [notes, ""] if notes else []
    lines += _protocol_notes(result)
    lines += class_iou_table(result)
    lines += ["Every picture's scores: [samples.csv](samples.csv); per-class IoU: summary.json.", ""]
    lines += ["![grid](grid.png)", ""]
    if "steps" in files:
        lines += ["![metrics by training step](metrics_by_step.png)", ""]
    with atomic_write(files["report"], "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    _write_rows(result, files["samples"])
    _write_summary(result, files["summary"])
    return files


def class_iou_table(result: EvalResult) -> list[str]:
    """Per-class IoU of each segmentation condition (COCO-Stuff names), as Markdown lines."""
    labels = list(result.class_iou)
    conditions = sorted({cond for per_cond in result.class_iou.values() for cond in per_cond})
    lines = []
    for cond in conditions:
        classes = sorted({c for label in labels for c in result.class_iou[label].get(cond, {})})
        lines += [f"Per-class IoU ({cond}):", "", "| class | " + " | ".join(labels) + " |"]
        lines.append("|" + "---|" * (len(labels) + 1))
        for class_id in classes:
            name = COCO_STUFF_LABELS[class_id] if 0 <= class_id < len(COCO_STUFF_LABELS) else str(class_id)
            values = (format_value(result.class_iou[label].get(cond, {}).get(class_id)) for label in labels)
            lines.append(f"| {name} | " + " | ".join(values) + " |")
        lines.append("")
    return lines


def _write_rows(result: EvalResult, path: Path) -> None:
    columns = list(ROW_FIELDS) + [key for key in result.metric_keys if any(key in row for row in result.rows)]
    with atomic_write(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(result.rows)


def _write_summary(result: EvalResult, path: Path) -> None:
    settings = asdict(result.settings)
    data = {
        "settings": settings,
        "resolution": result.resolution,
        "base_family": result.base_family,
        "num_samples": result.num_samples,
        "steps": {v.label: v.step for v in result.settings.variants},
        "summary": result.summary,
        "class_iou": {
            label: {cond: {str(k): v for k, v in classes.items()} for cond, classes in per_cond.items()}
            for label, per_cond in result.class_iou.items()
        },
    }
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(data, indent=1, default=str) + "\n")


def step_chart(result: EvalResult, extra_titles: dict[str, str] | None = None):
    """Each metric against the training step (None unless two or more variants have a step)."""
    stepped = [v for v in result.settings.variants if v.step is not None]
    if len(stepped) < 2:
        return None
    baseline = next((v for v in result.settings.variants if v.is_baseline), None)
    panels = []
    for key in result.metric_keys:
        series: dict[str, list[tuple[float, float]]] = {}
        for v in stepped:
            name = Path(v.run).name if v.run else "checkpoints"
            series.setdefault(name, []).append((v.step, result.summary[v.label].get(key, float("nan"))))
        level = result.summary[baseline.label].get(key) if baseline else None
        panels.append(draw_panel(metric_title(key, extra_titles), series, level))
    return stack_panels(panels)
