"""Batch generation: one JSONL line per generation, models loaded once, resumable, split over processes.

Each line is a JSON object with the fields a generated PNG records (`GenerationSettings`: `prompt`,
`model`, `adapters` as `[{"adapter": ..., "cond": ..., "cond_type": ..., "weight": ...}]`, `seed`,
`steps`, `num_images`, `width`, ...) and optionally an `id`. Fields a line leaves out come from the
defaults (the command line's flags). Condition paths are taken from the jobs file's folder.

```
{"id": "red-car", "prompt": "a red car", "adapters": [{"adapter": "demo:sketch", "cond": "car.png"}]}
{"prompt": "a blue house", "seed": 7, "adapters": [{"adapter": "demo:sketch", "cond": "house.png"}]}
```

Line `n` writes `<id>.png`, or `<n>.png` (6 digits) without an id; `num_images > 1` writes
`-0`, `-1`, ... after the name. A line whose images all exist is skipped, so a rerun resumes. A bad
line is reported with its number and the others go on. Process `rank` of `world_size` runs lines
`rank + 1, rank + 1 + world_size, ...`: every process decides the same split from the file alone.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from t2i_adapter.errors import InputFileError, T2IAdapterError
from t2i_adapter.generation.api import generate
from t2i_adapter.generation.cache import ModelCache
from t2i_adapter.generation.settings import GenerationSettings
from t2i_adapter.io.png import save_png
from t2i_adapter.io.text import MANIFEST_MAX_BYTES, parse_json, read_text

logger = logging.getLogger(__name__)

EXTRA_FIELDS = ("id", "version")  # allowed beside the settings: a name, a PNG record's format version
SETTINGS_FIELDS = tuple(f.name for f in fields(GenerationSettings))
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
AUTO_DEVICES = (None, "", "auto", "cuda")  # under accelerate these become the process's own GPU


@dataclass
class BatchJob:
    """One line's generation: its number, its output name, its settings."""

    line: int
    name: str
    settings: GenerationSettings


@dataclass
class BatchFailure:
    line: int
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.problem}"


@dataclass
class BatchReport:
    """What a run did: images written, lines skipped because their images exist, lines that failed."""

    written: list[Path] = field(default_factory=list)
    existing: int = 0
    failures: list[BatchFailure] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Reading the jobs file
# ---------------------------------------------------------------------------------------------


def read_jobs(
    path: str | Path, defaults: dict[str, Any] | None = None
) -> tuple[list[BatchJob], list[BatchFailure]]:
    """The jobs of a JSONL file, and the lines that are not jobs (with the reason)."""
    file = Path(path)
    if not os.path.lexists(file):
        raise InputFileError(file, "no such jobs file")
    lines = read_text(file, max_bytes=MANIFEST_MAX_BYTES, what="the jobs file").splitlines()
    jobs, failures, names = [], [], {}
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            job = parse_job(text, number, file.parent, defaults or {})
        except T2IAdapterError as error:
            failures.append(BatchFailure(number, str(error)))
            continue
        if job.name in names:
            failures.append(
                BatchFailure(number, f"output name '{job.name}' is already used by line {names[job.name]}")
            )
            continue
        names[job.name] = number
        jobs.append(job)
    if not jobs and not failures:
        raise InputFileError(file, "the jobs file has no lines")
    return jobs, failures


def parse_job(text: str, line: int, folder: Path, defaults: dict[str, Any]) -> BatchJob:
    """One line as a job; a `T2IAdapterError` saying what is wrong with it."""
    try:
        entry = parse_json(text, f"line {line}", what="the line")
    except InputFileError as error:
        raise T2IAdapterError(error.problem) from None
    if not isinstance(entry, dict):
        raise T2IAdapterError("not a JSON object")
    unknown = sorted(set(entry) - set(SETTINGS_FIELDS) - set(EXTRA_FIELDS))
    if unknown:
        raise T2IAdapterError(
            f"unknown field '{unknown[0]}' (fields: {', '.join(SETTINGS_FIELDS + EXTRA_FIELDS)})"
        )
    values = {**defaults, **{key: value for key, value in entry.items() if key not in EXTRA_FIELDS}}
    if not isinstance(values.get("adapters", []), list):
        raise T2IAdapterError("'adapters' must be a list of objects")
    values["adapters"] = [_adapter_entry(spec, folder) for spec in values.get("adapters", [])]
    for name in ("init_image", "mask"):  # relative to the jobs file, like conditions
        if isinstance(values.get(name), str) and values[name]:
            values[name] = _beside(values[name], folder)
    try:
        settings = GenerationSettings.from_dict(values)
    except (TypeError, ValueError) as error:
        raise T2IAdapterError(f"bad value: {error}") from None
    return BatchJob(line, _output_name(entry.get("id"), line), settings)


def _adapter_entry(spec: Any, folder: Path) -> Any:
    if not isinstance(spec, dict):
        raise T2IAdapterError("each entry of 'adapters' must be an object with 'adapter' and 'cond'")
    cond = spec.get("cond")
    if isinstance(cond, str) and cond:
        spec = {**spec, "cond": _beside(cond, folder)}
    return spec


def _beside(path: str, folder: Path) -> str:
    """A relative path in a jobs line is relative to the jobs file's folder."""
    return path if Path(path).expanduser().is_absolute() else str((folder / path).absolute())


def _output_name(given: Any, line: int) -> str:
    if given is None:
        return f"{line:06d}"
    name = str(given) if isinstance(given, str | int) and not isinstance(given, bool) else ""
    if not SAFE_NAME.fullmatch(name):
        raise T2IAdapterError(f"id {given!r} is not a file name (letters, digits, '.', '_', '-')")
    return name


def output_paths(out_dir: Path, job: BatchJob) -> list[Path]:
    """`<name>.png`, or `<name>-0.png`, `<name>-1.png`, ... for several images."""
    count = job.settings.num_images
    if count == 1:
        return [out_dir / f"{job.name}.png"]
    return [out_dir / f"{job.name}-{index}.png" for index in range(count)]


# ---------------------------------------------------------------------------------------------
# Running them
# ---------------------------------------------------------------------------------------------


def share_of(jobs: list[BatchJob], world_size: int, rank: int) -> list[BatchJob]:
    """The jobs process `rank` runs: split by line number, so it never depends on what exists."""
    return [job for job in jobs if (job.line - 1) % world_size == rank]


def run_jobs(
    jobs: list[BatchJob],
    out_dir: str | Path,
    *,
    device: str | None = None,
    cache: ModelCache | None = None,
    on_job: Callable[[BatchJob], None] | None = None,
) -> BatchReport:
    """Generate every job whose images do not exist yet; `device` replaces automatic device choices."""
    out = Path(out_dir)
    cache = cache or ModelCache()
    report = BatchReport()
    for job in jobs:
        paths = output_paths(out, job)
        if all(path.is_file() for path in paths):
            report.existing += 1
        else:
            settings = job.settings
            if device is not None and settings.device in AUTO_DEVICES:
                settings = settings.replace(device=device)
            try:
                result = generate(settings, cache=cache)
            except T2IAdapterError as error:
                report.failures.append(BatchFailure(job.line, str(error)))
            except Exception as error:  # one job's crash (out of memory, a model bug) must not lose the rest
                logger.debug("line %d failed", job.line, exc_info=True)
                first_line = (str(error).strip().splitlines() or [""])[0]
                report.failures.append(BatchFailure(job.line, f"{type(error).__name__}: {first_line}"))
            else:
                # recorded as the line asked: a PNG made on this process's GPU re-runs anywhere
                parameters = result.settings.replace(device=job.settings.device).to_dict()
                for image, path in zip(result.images, paths, strict=True):
                    report.written.append(save_png(image, path, parameters))
        if on_job is not None:
            on_job(job)
    return report
