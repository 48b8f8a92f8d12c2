"""`prepare_dataset(settings)`: a training set's conditions (and latents) computed once, into shards.

Read top to bottom: distributed set-up, source, output folder (refused, started or resumed), the
shards this process makes, then the index and report the main process writes once all are done.
One process, or many through `accelerate launch` (also across machines): each makes its share of
the shards (see `work.py`), so the output is the same whatever the number of processes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object

from t2i_adapter.errors import T2IAdapterError
from t2i_adapter.io.atomic import atomic_write
from t2i_adapter.training.data import open_dataset_with
from t2i_adapter.training.data.prepared import (
    EMPTY_CAPTION_FILE,
    FORMAT_VERSION,
    INDEX_FILE,
    REPORT_FILE,
    SETTINGS_FILE,
    WORK_FOLDER,
    read_json,
)
from t2i_adapter.training.data.source import registered_preprocessor
from t2i_adapter.training.distributed import process_state
from t2i_adapter.training.prepare.progress import Progress, clear_rank_files
from t2i_adapter.training.prepare.samples import ConditionMaker, LatentEncoder, Skipped, make_samples
from t2i_adapter.training.prepare.settings import PrepareSettings, first_difference
from t2i_adapter.training.prepare.shard_writer import remove_leftovers, write_shard
from t2i_adapter.training.prepare.work import WorkUnit, plan_work, share_of

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class PrepareSummary:
    """What a run wrote: shards with samples, and the samples skipped (where, reason)."""

    out: Path
    shards: list[dict[str, Any]] = field(default_factory=list)  # {"name", "samples"}
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return sum(shard["samples"] for shard in self.shards)


# ---------------------------------------------------------------------------------------------
# The output folder
# ---------------------------------------------------------------------------------------------


def check_output_folder(out: Path, settings: PrepareSettings) -> None:
    """Refuse a folder holding another run's shards (unless resuming that same run)."""
    if out.exists() and not out.is_dir():
        raise T2IAdapterError(f"{out}: exists and is not a folder; --out takes a folder")
    recorded = read_json(out / SETTINGS_FILE)
    has_tars = out.is_dir() and any(out.glob("*.tar"))
    if not settings.resume:
        if recorded is not None or has_tars:
            raise T2IAdapterError(
                f"{out}: already holds the shards of a prepare run; pass --resume to continue it, "
                "or choose another --out"
            )
        return
    if recorded is None:
        if has_tars:
            raise T2IAdapterError(f"{out}: holds .tar files that no prepare run wrote; choose another --out")
        return
    difference = first_difference(recorded.get("settings", {}), settings.recorded())
    if difference:
        raise T2IAdapterError(
            f"{out}: was prepared with other settings ({difference}); resume with the same ones, "
            "or choose another --out"
        )


def start_output_folder(out: Path, settings: PrepareSettings) -> None:
    """Main process: the folder, its settings file (first, so a resume can check them), no stale counts."""
    (out / WORK_FOLDER).mkdir(parents=True, exist_ok=True)
    clear_rank_files(out / WORK_FOLDER)
    if not (out / SETTINGS_FILE).is_file():
        _write_json(out / SETTINGS_FILE, {"version": FORMAT_VERSION, "settings": settings.recorded()})


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_write(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")


def _unit_record_path(out: Path, unit: WorkUnit) -> Path:
    return out / WORK_FOLDER / f"{Path(unit.name).stem}.json"


def finished_record(out: Path, unit: WorkUnit) -> dict[str, Any] | None:
    """The record of a unit an earlier run finished (its shard is in place), else None."""
    record = read_json(_unit_record_path(out, unit))
    if record is None or (record["samples"] and not (out / unit.name).is_file()):
        return None
    return record


def write_report(out: Path, settings: PrepareSettings, summary: PrepareSummary) -> None:
    """`report.txt`: how many samples went into how many shards, and each skipped one with the reason."""
    lines = [f"prepared {summary.samples} samples into {len(summary.shards)} shards from {settings.source}"]
    if summary.skipped:
        lines.append(f"skipped {len(summary.skipped)}:")
        lines += [f"  {where}: {reason}" for where, reason in summary.skipped]
    (out / REPORT_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_index(out: Path, settings: PrepareSettings, summary: PrepareSummary) -> None:
    """Main process, last: `index.json` lists the shards and marks the run complete."""
    index = {
        "version": FORMAT_VERSION,
        "settings": settings.recorded(),
        "samples": summary.samples,
        "skipped": len(summary.skipped),
        "shards": summary.shards,
    }
    _write_json(out / INDEX_FILE, index)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def condition_maker(source, settings: PrepareSettings, device: str) -> ConditionMaker:
    """Conditions from the dataset's maps, or from the preprocessor `--cond-type` names."""
    if source.computes_condition:
        spec = registered_preprocessor(source.cond_type)
        options = spec.check_options(settings.cond_options)
        return ConditionMaker(source.cond_type, spec, options, device=device)
    if settings.cond_options:
        raise T2IAdapterError(
            f"--cond-option/--cond-model: {settings.source} has its own '{source.cond_type}' maps, so no "
            "preprocessor runs; leave them out (or pick a --cond-type the dataset has no maps for)"
        )
    return ConditionMaker(source.cond_type)


def prepare_dataset(settings: PrepareSettings) -> PrepareSummary:
    """Write the prepared shards of `settings.source` into `settings.out`; returns what was written."""
    settings = settings.validate()
    state = process_state()
    source, conditions = open_source(settings, str(state.device))
    check_output_folder(Path(settings.out), settings)  # every process checks before any writes
    state.wait_for_everyone()
    if state.is_main_process:
        start_output_folder(Path(settings.out), settings)
    state.wait_for_everyone()

    units = share_of(plan_work(source, settings.samples_per_shard), state.num_processes, state.process_index)
    records = make_share(settings, state, source, conditions, units)

    summary = summarise(Path(settings.out), source, gather_object(records))
    if state.is_main_process:
        write_report(summary.out, settings, summary)
        if not summary.shards:
            raise T2IAdapterError(
                f"{settings.source}: no sample could be prepared (see {summary.out / REPORT_FILE})"
            )
        write_index(summary.out, settings, summary)
    state.wait_for_everyone()
    return summary


def open_source(settings: PrepareSettings, device: str) -> tuple[Any, ConditionMaker]:
    """The dataset, and where its conditions come from (options recorded as the preprocessor takes them)."""
    source = open_dataset_with(settings.source, settings)
    conditions = condition_maker(source, settings, device)
    settings.cond_options = conditions.options  # `384`, not `"384"`: a resume compares these
    return source, conditions


def make_share(
    settings: PrepareSettings, state, source, conditions: ConditionMaker, units: list[WorkUnit]
) -> list:
    """This process's shards (those an earlier run finished are kept); returns their records."""
    out = Path(settings.out)
    finished = {unit.index: finished_record(out, unit) for unit in units}
    latents = None
    if settings.model and (state.is_main_process or None in finished.values()):
        dtype = TORCH_DTYPES[settings.dtype]
        latents = LatentEncoder(
            settings.model, vae=settings.vae, resolution=settings.resolution, dtype=dtype, device=state.device
        )
        if state.is_main_process:
            with atomic_write(out / EMPTY_CAPTION_FILE) as handle:
                handle.write(latents.empty_caption())
    progress = Progress(
        out / WORK_FOLDER,
        rank=state.process_index,
        world_size=state.num_processes,
        own_total=_inputs(units, source),
        own_done=_inputs([unit for unit in units if finished[unit.index] is not None], source) or 0,
        total=None if source.streamed else len(source),
        enabled=settings.progress,
    )
    records = []
    for unit in units:
        record = finished[unit.index]
        if record is None:
            record = _make_unit(out, unit, source, conditions, latents, settings.batch_size, progress)
        records.append(record)
    progress.finish()
    if state.is_main_process:
        progress.wait_for_others()
    return records


def summarise(out: Path, source, records: list[dict[str, Any]]) -> PrepareSummary:
    """Every process's shard records as one summary, in shard order."""
    summary = PrepareSummary(out)
    summary.skipped = [tuple(item) for item in getattr(source, "unreadable", [])]
    for record in sorted(records, key=lambda record: record["name"]):
        if record["samples"]:
            summary.shards.append({"name": record["name"], "samples": record["samples"]})
        summary.skipped += [tuple(item) for item in record["skipped"]]
    return summary


def _inputs(units: list[WorkUnit], source) -> int | None:
    """How many input samples `units` read (unknown for WebDataset inputs)."""
    if source.streamed:
        return None
    return sum(len(unit.records) for unit in units)


def _make_unit(out: Path, unit: WorkUnit, source, conditions, latents, batch_size: int, progress) -> dict:
    """Make one shard: its record first, then the shard itself (the rename marks it finished)."""
    remove_leftovers(out, unit.name)
    samples, skipped = make_samples(
        source,
        unit,
        conditions=conditions,
        latents=latents,
        batch_size=batch_size,
        on_progress=progress.advance,
    )
    record = {"name": unit.name, "samples": len(samples), "skipped": [list(item) for item in skipped]}
    _write_json(_unit_record_path(out, unit), record)
    if samples:
        write_shard(out / unit.name, samples)
    return record
