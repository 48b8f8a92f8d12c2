"""The data check: read every sample once before a long run and say what is wrong with it.

Counts, missing or corrupt files (with the line they come from), image size statistics,
captions longer than the text encoder takes, and image/condition size mismatches. `t2i-adapter
data check PATH` prints the report; `train` runs the same check up front and skips the bad
samples (or, with `--strict`, refuses to start).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from t2i_adapter.errors import InputFileError, T2IAdapterError, first_line
from t2i_adapter.generation.base_model import model_source
from t2i_adapter.training.data.example import Example
from t2i_adapter.training.data.shards import StreamSource
from t2i_adapter.training.data.source import IndexedSource

MAX_LISTED = 20  # findings listed one by one in the summary; the rest are counted


class DataCheckError(T2IAdapterError):
    """The dataset cannot be trained on (no usable sample, or a problem under --strict)."""


@dataclass
class DataReport:
    """What the check found; `good` are the indices of usable samples (indexed datasets)."""

    path: str
    format: str
    cond_type: str | None
    computes_condition: bool
    condition_channels: int | None
    checked: int = 0
    good: list[int] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (where, problem): sample skipped
    size_mismatches: list[tuple[str, tuple[int, int], tuple[int, int]]] = field(default_factory=list)
    long_captions: list[tuple[str, int]] = field(default_factory=list)  # (where, tokens)
    empty_captions: list[str] = field(default_factory=list)  # where: trained on the empty prompt
    smaller_than_resolution: int = 0
    widths: list[int] = field(default_factory=list, repr=False)
    heights: list[int] = field(default_factory=list, repr=False)
    max_tokens: int | None = None
    resolution: int | None = None
    limited: bool = False  # a stream checked only up to a limit

    @property
    def usable(self) -> int:
        return len(self.good)

    @property
    def is_usable(self) -> bool:
        return self.usable > 0

    def verdict(self, *, strict: bool = False) -> str:
        """The last line of the summary; with `strict`, any problem refuses the dataset."""
        if not self.is_usable:
            return "verdict: UNUSABLE: no sample can be trained on"
        if strict and self.problems:
            return f"verdict: REFUSED under --strict: {len(self.problems)} sample(s) with problems"
        skipped = f" ({len(self.problems)} sample(s) with problems are skipped)" if self.problems else ""
        return f"verdict: usable{skipped}"

    def summary(self, *, strict: bool = False) -> str:
        """A human-readable multi-line report."""
        lines = [
            f"dataset: {self.path} ({self.format}{', first samples only' if self.limited else ''})",
            f"samples: {self.checked} checked, {self.usable} usable, {len(self.problems)} with problems (skipped)",
        ]
        if self.computes_condition:
            lines.append(f"conditions: computed from each image by the '{self.cond_type}' preprocessor")
        else:
            lines.append(
                f"conditions: '{self.cond_type}' maps from the dataset, {self.condition_channels} channel(s)"
            )
        if self.widths:
            lines.append(
                f"image sizes: width {min(self.widths)} / {int(statistics.median(self.widths))} / {max(self.widths)}, height {min(self.heights)} / {int(statistics.median(self.heights))} / {max(self.heights)} (min / median / max)"
            )
        if self.resolution and self.smaller_than_resolution:
            lines.append(
                f"upscaled: {self.smaller_than_resolution} image(s) have a side shorter than {self.resolution}"
            )
        lines += _listed("empty caption (trained on the empty prompt)", self.empty_captions)
        lines += _listed("problem", [f"{where}: {problem}" for where, problem in self.problems])
        lines += _listed(
            "size mismatch (condition resized to the image)",
            [f"{w}: image {i[0]}x{i[1]}, condition {c[0]}x{c[1]}" for w, i, c in self.size_mismatches],
        )
        if self.max_tokens is not None:
            lines += _listed(
                f"caption longer than {self.max_tokens} tokens (the rest is cut off)",
                [f"{where}: {tokens} tokens" for where, tokens in self.long_captions],
            )
        else:
            lines.append("caption length: not checked (pass --model to count tokens)")
        lines.append(self.verdict(strict=strict))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "format": self.format,
            "checked": self.checked,
            "usable": self.usable,
            "problems": [{"where": w, "problem": p} for w, p in self.problems],
            "size_mismatches": [
                {"where": w, "image": list(i), "condition": list(c)} for w, i, c in self.size_mismatches
            ],
            "long_captions": [{"where": w, "tokens": t} for w, t in self.long_captions],
            "empty_captions": self.empty_captions,  # where each one is
            "computes_condition": self.computes_condition,
            "condition_channels": self.condition_channels,
        }


def _listed(title: str, entries: list[str]) -> list[str]:
    if not entries:
        return []
    lines = [f"{title}s: {len(entries)}"]
    lines += [f"  {entry}" for entry in entries[:MAX_LISTED]]
    if len(entries) > MAX_LISTED:
        lines.append(f"  ... and {len(entries) - MAX_LISTED} more")
    return lines


def _token_counter(tokenizer) -> tuple[Callable[[str], int] | None, int | None]:
    if tokenizer is None:
        return None, None
    return (lambda text: len(tokenizer(text, truncation=False).input_ids)), int(tokenizer.model_max_length)


def _examine(report: DataReport, example: Example, count_tokens) -> None:
    width, height = example.image.size
    report.widths.append(width)
    report.heights.append(height)
    if report.resolution and min(width, height) < report.resolution:
        report.smaller_than_resolution += 1
    if example.condition is not None and example.condition.size != example.image.size:
        report.size_mismatches.append((example.where, example.image.size, example.condition.size))
    if not example.caption.strip():
        report.empty_captions.append(example.where)
    elif count_tokens is not None:
        tokens = count_tokens(example.caption)
        if tokens > report.max_tokens:
            report.long_captions.append((example.where, tokens))


def check_dataset(
    source: IndexedSource | StreamSource,
    *,
    tokenizer=None,
    resolution: int | None = None,
    limit: int | None = None,
    progress: bool = False,
) -> DataReport:
    """Read every sample (a stream: the first `limit`, if given) and report what is wrong."""
    count_tokens, max_tokens = _token_counter(tokenizer)
    report = DataReport(
        path=source.path,
        format=source.format,
        cond_type=source.cond_type,
        computes_condition=source.computes_condition,
        condition_channels=source.condition_channels,
        max_tokens=max_tokens,
        resolution=resolution,
    )
    if isinstance(source, StreamSource):
        samples = (
            (raw.where, lambda raw=raw: source.decode(raw))
            for s in source.shards
            for raw in source.read_shard(s)
        )
        total = None
    else:
        report.problems.extend(source.unreadable)
        samples = ((source.records[i].where, lambda i=i: source.load(i)) for i in range(len(source)))
        total = len(source)
    for index, (where, load) in enumerate(
        tqdm(samples, total=total, desc="data check", disable=not progress)
    ):
        if limit is not None and index >= limit:
            report.limited = True
            break
        report.checked += 1
        try:
            example = load()
        except InputFileError as error:
            report.problems.append((where, error.problem if error.path == where else str(error)))
            continue
        report.good.append(index)
        _examine(report, example, count_tokens)
    # unreadable lines and shards, truncated shards' last samples: each counts as one checked sample
    extra = source.errors if isinstance(source, StreamSource) else source.unreadable
    if isinstance(source, StreamSource):
        report.problems.extend(extra)
    report.checked += len(extra)
    return report


def load_tokenizer(model: str):
    """Just the (first) tokenizer of a base model, without loading its weights."""
    from transformers import AutoTokenizer  # seconds to import: only when captions are counted

    location = model_source(model)
    try:
        return AutoTokenizer.from_pretrained(str(location), subfolder="tokenizer")
    except Exception as error:  # offline hub, a single-file checkpoint, a broken folder
        raise InputFileError(str(location), f"cannot read the tokenizer: {first_line(error)}") from None


def require_usable(report: DataReport, *, strict: bool) -> None:
    """Raise `DataCheckError` when training cannot start on this data."""
    if not report.is_usable:
        raise DataCheckError(
            f"{report.path}: no usable samples ({len(report.problems)} with problems); run 't2i-adapter data check {report.path}'"
        )
    if strict and report.problems:
        where, problem = report.problems[0]
        raise DataCheckError(
            f"{where}: {problem} ({len(report.problems)} bad sample(s) in {report.path}; --strict refuses to skip them)"
        )
