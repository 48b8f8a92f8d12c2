"""What the data-preparation and training benchmarks share: a child process's one `RESULT` line,
waiting for the GPU before a clock read, the median training step from a run's `metrics.csv`, the
machine's name, and their sections of docs/benchmarks.md."""

from __future__ import annotations

import csv
import json
import os
import platform
import statistics
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
RESULT = "RESULT "


# ---------------------------------------------------------------------------------------------
# Child processes: each measurement runs alone and prints one JSON line
# ---------------------------------------------------------------------------------------------


def print_result(result: dict) -> None:
    """The child's answer to `run_child`: one line, `RESULT {json}`."""
    print(RESULT + json.dumps(result))


def run_child(command: list[str], what: str | None = None, env: dict[str, str] | None = None) -> dict:
    """Run `command` and return the dict it printed with `print_result`; a failure names `what` (by
    default the command's start) and quotes its stderr."""
    what = what or f"{' '.join(command[:6])} ..."
    completed = subprocess.run(command, capture_output=True, text=True, env=env)
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT) :])
    raise RuntimeError(f"{what} failed:\n{completed.stderr[-3000:]}")


# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------


def synchronize() -> None:
    """Wait for the GPU's queued work, so that a clock read afterwards includes it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def logged_seconds(run_dir: Path) -> list[float]:
    """The `seconds` column of a training run's metrics.csv: time since the loop's start, per step."""
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [float(row["seconds"]) for row in csv.DictReader(handle)]


def median_step_seconds(seconds: list[float], warmup: int) -> float:
    """The median duration of the steps after `warmup`: on a shared machine, the least disturbed one."""
    durations = [
        later - earlier for earlier, later in zip(seconds[warmup - 1 : -1], seconds[warmup:], strict=True)
    ]
    return statistics.median(durations)


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def describe_machine(gpu_count: bool = False) -> str:
    """The GPU's name (`N x name` with `gpu_count`), else the CPU and its cores."""
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return f"{torch.cuda.device_count()} x {name}" if gpu_count else name
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores (shared)"


def write_docs(section: str, label: str, text: str, intro: str = "") -> None:
    """Put `text` under `section` / "### <label>" in docs/benchmarks.md, keeping everything else;
    `intro` opens the section when it is new."""
    current = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    block = f"### {label}\n\n{text}\n"
    if section not in current:
        current = current.rstrip("\n") + f"\n\n{section}\n\n" + (f"{intro}\n" if intro else "") + block
    else:
        head, _, rest = current.partition(section)
        next_section = rest.find("\n## ")
        body, tail = (rest, "") if next_section < 0 else (rest[:next_section], rest[next_section:])
        marker = f"### {label}\n"
        if marker in body:
            before, _, after = body.partition(marker)
            following = after.find("\n### ")
            after = "" if following < 0 else after[following + 1 :]
            body = before + block + ("\n" + after if after else "")
        else:
            body = body.rstrip("\n") + "\n\n" + block
        current = head + section + body + tail
    DOCS.write_text(current.rstrip("\n") + "\n")
