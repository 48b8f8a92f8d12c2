"""`t2i-adapter generate --batch JOBS.jsonl --out-dir DIR`: one generation per line (see
`generation/batch.py` for the file), models loaded once, resumable; on several GPUs:
`accelerate launch -m t2i_adapter.interfaces.cli.main generate --batch JOBS.jsonl --out-dir DIR`.

Flags given beside `--batch` (`--model`, `--steps`, `--adapter ... --cond ...`, ...) are defaults
that each line's fields override. Each image written is printed; each line that fails is one
`error: JOBS.jsonl:N: ...` line on stderr, and the exit status is 2 at the end if any failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from accelerate.utils import gather_object
from tqdm.auto import tqdm

from t2i_adapter.errors import T2IAdapterError
from t2i_adapter.generation.batch import BatchFailure, read_jobs, run_jobs, share_of
from t2i_adapter.training.distributed import process_state

EXIT_FAILED = 2


def check_batch_flags(args: argparse.Namespace) -> None:
    """Flags that mean nothing, or something else, with --batch."""
    for flag, given in (("--from-png", args.from_png), ("--out", args.out), ("--save-cond", args.save_cond)):
        if given:
            raise T2IAdapterError(
                f"{flag} does not go with --batch (outputs go to --out-dir, one PNG per line)"
            )
    if not args.out_dir:
        raise T2IAdapterError("--batch needs --out-dir (the folder for the PNGs)")
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise T2IAdapterError(f"{out}: exists and is not a folder; --out-dir takes a folder")


def _report(jobs_file: str, failures: list[BatchFailure]) -> None:
    for failure in failures:
        print(f"error: {jobs_file}:{failure.line}: {failure.problem}", file=sys.stderr)


def run_batch(args: argparse.Namespace, defaults: dict[str, Any]) -> int:
    """Run this process's share of the lines; every process exits with the same status."""
    check_batch_flags(args)
    state = process_state()
    rank, world_size = state.process_index, state.num_processes
    jobs, bad_lines = read_jobs(args.batch, defaults)
    if state.is_main_process:
        _report(args.batch, bad_lines)
    mine = share_of(jobs, world_size, rank)
    bar = tqdm(
        total=len(mine),
        desc=f"rank {rank}" if world_size > 1 else "generating",
        unit="line",
        position=rank,
        disable=not sys.stderr.isatty(),
    )
    report = run_jobs(
        mine,
        args.out_dir,
        device=str(state.device) if world_size > 1 else None,  # each process on its own GPU
        on_job=lambda job: bar.update(1),
    )
    bar.close()
    for path in report.written:
        print(path)
    _report(args.batch, report.failures)
    totals = gather_object([(len(report.written), report.existing, len(report.failures))])
    written, existing, failed = (sum(column) for column in zip(*totals, strict=True))
    failed += len(bad_lines)
    if state.is_main_process:
        print(
            f"batch: {written} image(s) written, {existing} line(s) already done, {failed} line(s) failed",
            file=sys.stderr,
        )
    return EXIT_FAILED if failed else 0
