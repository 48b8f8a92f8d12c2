"""Issue 12's item 6 targets, judged from the JSON files of `benchmarks/gpu_all.sh`.

For each target: the measured number, the target, and PASS or FAIL; "not measured" when its run
or row is missing (skipped, stopped at the time limit, failed), "not applicable" when the run is
not the target's setting (a CPU smoke run, another size or step count): never a PASS that was not
measured on CUDA in fp16. Then a markdown block for docs/benchmarks.md: the card, torch and
diffusers versions, each run's rows, and the verdicts.

    python benchmarks/targets.py benchmarks/results [--markdown benchmarks/results/targets.md]

Targets (H200-class GPU, SD1.5 512x512 fp16, 50 steps): (a) ours eager <= diffusers eager in time
and in CUDA peak memory; (b) ours compiled <= 0.45 s per image after the first call; (c) 4-step
LCM with an adapter <= 0.1 s per image; (d) SDXL 1024x1024 ours compiled <= 0.4x diffusers eager.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

RUNS = ("sd15-512", "lcm4-512", "sdxl-1024", "sd15-512-memory")
TARGET_CARD = "H200"


@dataclass
class Verdict:
    label: str
    measured: str
    target: str
    result: str  # PASS, FAIL, "not measured: ...", "not applicable: ..."


# ---------------------------------------------------------------------------------------------
# Reading the runs
# ---------------------------------------------------------------------------------------------


def load_runs(folder: Path) -> dict[str, dict]:
    runs = {}
    for name in RUNS:
        path = folder / f"{name}.json"
        if path.is_file():
            runs[name] = json.loads(path.read_text())
    return runs


def setting_problem(run: dict, *, size: int, steps: int, scheduler: str | None = None) -> str | None:
    """Why `run` is not the target's setting (None when it is)."""
    if not str(run.get("device", "")).startswith("cuda"):
        return f"not applicable on {run.get('device')} ({run.get('model')}, a smoke run)"
    wanted = {"dtype": "float16", "size": size, "steps": steps}
    if scheduler:
        wanted["scheduler"] = scheduler
    for key, value in wanted.items():
        if run.get(key) != value:
            return f"not applicable: ran {key}={run.get(key)}, the target is for {value}"
    if scheduler and run.get("guidance", 0) > 1:
        return f"not applicable: ran guidance {run['guidance']}, the target is for 1 (no CFG)"
    if not str(run.get("model", "")).startswith("full-size"):
        return f"not applicable: ran the {run.get('model')} model"
    return None


def why_missing(run: dict, name: str, row: str) -> str:
    if row in run.get("errors", {}):
        return run["errors"][row]
    if "compiled" in row and not run.get("compile", True):
        return "run without --compile"
    return "the run was stopped before it" if not run.get("complete") else "not in the run"


def found(
    runs: dict[str, dict], name: str, rows: tuple[str, ...], **setting
) -> tuple[list[dict], str | None]:
    """The `rows` of run `name` (empty unless all are there) and why the target cannot be judged
    from them (no such run, not the target's setting, a row missing), or None."""
    run = runs.get(name)
    if run is None:
        return [], f"not measured: no {name}.json (skipped or failed; see the log)"
    problem = setting_problem(run, **setting)
    absent = [row for row in rows if row not in run["rows"]]
    if absent:
        why = why_missing(run, name, absent[0])
        return [], problem or f"not measured: no '{absent[0]}' row in {name}.json ({why})"
    return [run["rows"][row] for row in rows], problem


def seconds(row: dict) -> float:
    return row["median_seconds"]


def judge(passed: bool, run: dict) -> str:
    result = "PASS" if passed else "FAIL"
    card = run.get("machine", "")
    return result if TARGET_CARD in card else f"{result} (on {card}; the target is for an {TARGET_CARD})"


# ---------------------------------------------------------------------------------------------
# The four targets
# ---------------------------------------------------------------------------------------------


def target_a(runs: dict[str, dict]) -> Verdict:
    verdict = Verdict("(a) SD1.5 eager: ours <= diffusers in time and CUDA peak", "-", "ratios <= 1", "")
    rows, verdict.result = found(runs, "sd15-512", ("ours", "diffusers"), size=512, steps=50)
    if not rows:
        return verdict
    ours, peer = rows
    time_ratio = seconds(ours) / seconds(peer)
    measured_peaks = number(ours["peak_mib"]) and number(peer["peak_mib"]) and peer["peak_mib"] > 0
    peak_ratio = ours["peak_mib"] / peer["peak_mib"] if measured_peaks else math.nan  # NaN: never a PASS
    verdict.measured = (
        f"{seconds(ours):.3f} vs {seconds(peer):.3f} s ({time_ratio:.2f}x); "
        f"peak {mib(ours['peak_mib'])} vs {mib(peer['peak_mib'])} MiB"
        + (f" ({peak_ratio:.2f}x)" if measured_peaks else "")
    )
    verdict.result = verdict.result or judge(time_ratio <= 1 and peak_ratio <= 1, runs["sd15-512"])
    return verdict


def target_b(runs: dict[str, dict]) -> Verdict:
    verdict = Verdict("(b) SD1.5 compiled, after the first call", "-", "<= 0.45 s / image", "")
    rows, verdict.result = found(runs, "sd15-512", ("ours, compiled",), size=512, steps=50)
    if not rows:
        return verdict
    run = runs["sd15-512"]
    value = seconds(rows[0])
    first = run.get("first_calls", {}).get("ours, compiled", math.nan)
    verdict.measured = f"{value:.3f} s / image (first call {first:.0f} s)"
    verdict.result = verdict.result or judge(value <= 0.45, run)
    return verdict


def target_c(runs: dict[str, dict]) -> Verdict:
    verdict = Verdict("(c) SD1.5 4-step LCM + adapter, guidance 1", "-", "<= 0.1 s / image", "")
    rows, verdict.result = found(runs, "lcm4-512", ("ours",), size=512, steps=4, scheduler="lcm")
    if not rows:
        return verdict
    run = runs["lcm4-512"]
    eager = seconds(rows[0])
    compiled = run["rows"].get("ours, compiled")
    best = min(eager, seconds(compiled)) if compiled else eager
    verdict.measured = f"eager {eager:.3f} s" + (f", compiled {seconds(compiled):.3f} s" if compiled else "")
    verdict.result = verdict.result or judge(best <= 0.1, run)
    return verdict


def target_d(runs: dict[str, dict]) -> Verdict:
    verdict = Verdict("(d) SDXL 1024 compiled / diffusers eager", "-", "<= 0.40x", "")
    rows, verdict.result = found(runs, "sdxl-1024", ("ours, compiled", "diffusers"), size=1024, steps=50)
    if not rows:
        return verdict
    ours, peer = rows
    ratio = seconds(ours) / seconds(peer)
    verdict.measured = f"{seconds(ours):.3f} / {seconds(peer):.3f} s = {ratio:.2f}x"
    verdict.result = verdict.result or judge(ratio <= 0.4, runs["sdxl-1024"])
    return verdict


TARGETS = (target_a, target_b, target_c, target_d)


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------


def number(value: float | None) -> bool:
    """A measured number: not None (JSON null) and not NaN."""
    return value is not None and not math.isnan(value)


def mib(value: float | None) -> str:
    return f"{value:.0f}" if number(value) else "-"


def run_table(name: str, run: dict) -> list[str]:
    versions = run.get("versions", {})
    lines = [
        f"`{name}`: {run['model']}, {run['size']}x{run['size']}, {run['steps']} steps {run['scheduler']}, "
        f"guidance {run['guidance']:g}, {run['dtype']}, {run['repeats']} timed runs each; "
        f"{run['machine']}, torch {versions.get('torch')}, diffusers {versions.get('diffusers')}"
        + ("" if run.get("complete") else " (**incomplete**: stopped before its last phase)"),
        "",
        "| pipeline | s / image, median | best | first call (s) | CUDA peak above weights (MiB) | process peak (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    first_calls = run.get("first_calls", {})
    for row_name, row in run["rows"].items():
        first = first_calls.get(row_name)
        lines.append(
            f"| {row_name} | {row['median_seconds']:.3f} | {row['seconds']:.3f} | "
            f"{'-' if first is None else f'{first:.1f}'} | {mib(row['peak_mib'])} | {mib(row['peak_total_mib'])} |"
        )
    lines += [
        f"| {row_name} | not measured: {error} | | | | |" for row_name, error in run.get("errors", {}).items()
    ]
    return [*lines, ""]


def markdown(runs: dict[str, dict], verdicts: list[Verdict]) -> str:
    lines = []
    for name, run in runs.items():
        lines += run_table(name, run)
    lines += ["| target | measured | target | result |", "|---|---|---|---|"]
    lines += [f"| {v.label} | {v.measured} | {v.target} | {v.result} |" for v in verdicts]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="where gpu_all.sh wrote its JSON files")
    parser.add_argument("--markdown", type=Path, help="also write the markdown block here")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"error: {args.folder} is not a folder", file=sys.stderr)
        return 2
    runs = load_runs(args.folder)
    verdicts = [target(runs) for target in TARGETS]
    for verdict in verdicts:
        print(
            f"target {verdict.label}: measured {verdict.measured}; target {verdict.target}: {verdict.result}"
        )
    text = markdown(runs, verdicts)
    print("\n" + text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
