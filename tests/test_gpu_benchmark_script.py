"""benchmarks/gpu_all.sh and benchmarks/targets.py: the one GPU run of issue 12, checked on a CPU.

The smoke path runs the script's very commands on the tiny models (2 steps, 1 repeat, no compile)
and must leave every JSON file and a verdict line per target, none of them a PASS; the verdicts
themselves are checked on made-up CUDA results."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import generate  # noqa: E402
import targets  # noqa: E402

from t2i_adapter.generation import compiling  # noqa: E402

RUNS = {
    "sd15-512": ["ours", "diffusers"],
    "lcm4-512": ["ours", "diffusers"],
    "sdxl-1024": ["ours", "diffusers"],
    "sd15-512-memory": ["ours", "diffusers", "ours + memory options"],
}


@pytest.mark.slow
def test_smoke_run_writes_every_json_and_judges_no_target(tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "SMOKE": "1", "PYTHON": sys.executable}
    env.pop("OUT", None)
    completed = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_all.sh"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    for name, rows in RUNS.items():
        run = json.loads((tmp_path / f"{name}.json").read_text())
        assert list(run["rows"]) == rows, name
        assert run["complete"] and run["device"] == "cpu" and run["steps"] == 2
        assert run["versions"]["diffusers"] and run["versions"]["torch"]
    lcm = json.loads((tmp_path / "lcm4-512.json").read_text())
    assert (lcm["scheduler"], lcm["guidance"]) == ("lcm", 1.0)
    assert json.loads((tmp_path / "sdxl-1024.json").read_text())["model"] == "tiny SDXL"
    verdicts = [line for line in completed.stdout.splitlines() if line.startswith("target (")]
    assert [line[len("target ") : len("target (a)")] for line in verdicts] == ["(a)", "(b)", "(c)", "(d)"]
    assert all(line.endswith("a smoke run)") and "PASS" not in line for line in verdicts), verdicts
    assert "| (d) SDXL 1024 compiled / diffusers eager |" in (tmp_path / "targets.md").read_text()


def test_a_spent_budget_skips_every_run_and_nothing_is_judged(tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "SMOKE": "1", "PYTHON": sys.executable, "BUDGET_S": "0"}
    completed = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_all.sh"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count(": skipped, ") == 4
    assert not list(tmp_path.glob("*.json"))
    verdicts = [line for line in completed.stdout.splitlines() if line.startswith("target (")]
    assert len(verdicts) == 4 and all(": not measured: no " in line for line in verdicts), verdicts


# ---------------------------------------------------------------------------------------------
# generate.py's compiled phase (torch.compile stubbed: the rows and the JSON, not the speed)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def stub_compile(monkeypatch):
    monkeypatch.setattr(compiling, "compile_unsupported", lambda device: None)
    monkeypatch.setattr(compiling.torch, "compile", lambda module, **options: module)


TINY = ["--device", "cpu", "--steps", "2", "--repeats", "1", "--no-memory-probe", "--compile"]


def test_compiled_rows_are_the_ones_targets_reads(tmp_path, stub_compile):
    path = tmp_path / "lcm4-512.json"
    assert generate.main([*TINY, "--scheduler", "lcm", "--guidance", "1", "--json", str(path)]) == 0
    run = json.loads(path.read_text())
    assert list(run["rows"]) == ["ours", "diffusers", "ours, compiled", "diffusers, compiled"]
    assert run["compile"] and run["complete"] and run["errors"] == {}
    assert set(run["first_calls"]) == set(run["rows"])
    assert run["max_pixel_difference"]["ours vs diffusers"] < 1e-5  # the same LCM sampler in both
    assert run["rows"]["ours"]["peak_mib"] is None  # not measured (no probe): null, not NaN
    assert targets.target_c({"lcm4-512": run}).measured.startswith("eager ")


def test_a_failing_compiled_pipeline_is_left_out_with_its_error(tmp_path, stub_compile, monkeypatch):
    run_diffusers = generate.RUNS["diffusers"]

    def fails_compiled(bench):
        if bench.ours.compiled_unet is not None:
            raise RuntimeError("CUDA graphs went wrong\nsecond line")
        return run_diffusers(bench)

    monkeypatch.setitem(generate.RUNS, "diffusers", fails_compiled)
    path = tmp_path / "sd15-512.json"
    assert generate.main([*TINY, "--json", str(path)]) == 1
    run = json.loads(path.read_text())
    assert list(run["rows"]) == ["ours", "diffusers", "ours, compiled"]
    assert run["errors"] == {"diffusers, compiled": "RuntimeError: CUDA graphs went wrong"}


def test_an_unknown_scheduler_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        generate.parse_args(["--scheduler", "nope"])
    assert exit_info.value.code == 2
    assert "error: unknown scheduler 'nope'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The verdicts, on made-up CUDA results
# ---------------------------------------------------------------------------------------------


def row(median: float, peak: float | None = 600.0) -> dict:
    return {"seconds": median, "median_seconds": median, "peak_mib": peak, "peak_total_mib": peak}


def cuda_run(model: str, size: int, steps: int, rows: dict, **extra) -> dict:
    return {
        "model": model,
        "size": size,
        "steps": steps,
        "dtype": "float16",
        "scheduler": "DDIMScheduler",
        "guidance": 7.5,
        "repeats": 3,
        "device": "cuda",
        "machine": "NVIDIA H200",
        "versions": {"torch": "2.11.0+cu130", "diffusers": "0.42.1"},
        "compile": True,
        "complete": True,
        "first_calls": {"ours, compiled": 80.0},
        "errors": {},
        "rows": rows,
        **extra,
    }


def passing_runs() -> dict[str, dict]:
    sd15 = "full-size SD1.5 (random)"
    return {
        "sd15-512": cuda_run(
            sd15, 512, 50, {"ours": row(1.2, 620), "diffusers": row(1.5, 620), "ours, compiled": row(0.44)}
        ),
        "lcm4-512": cuda_run(
            sd15, 512, 4, {"ours": row(0.15), "ours, compiled": row(0.08)}, scheduler="lcm", guidance=1.0
        ),
        "sdxl-1024": cuda_run(
            "full-size SDXL (random)", 1024, 50, {"diffusers": row(6.0), "ours, compiled": row(2.3)}
        ),
    }


def results(runs: dict[str, dict]) -> list[str]:
    return [target(runs).result for target in targets.TARGETS]


def test_targets_pass_only_within_their_limits():
    runs = passing_runs()
    assert results(runs) == ["PASS"] * 4
    worse = copy.deepcopy(runs)
    worse["sd15-512"]["rows"]["ours"]["peak_mib"] = 621  # same speed, 1 MiB more than diffusers
    worse["sd15-512"]["rows"]["ours, compiled"] = row(0.46)
    worse["lcm4-512"]["rows"]["ours, compiled"] = row(0.11)
    worse["sdxl-1024"]["rows"]["ours, compiled"] = row(2.5)  # 0.42x
    assert results(worse) == ["FAIL"] * 4


def test_missing_or_other_settings_are_never_a_pass():
    runs = passing_runs()
    runs["sd15-512"]["rows"]["ours"]["peak_mib"] = None  # no CUDA peak: cannot pass (a)
    del runs["sd15-512"]["rows"]["ours, compiled"]
    runs["sd15-512"]["errors"] = {"ours, compiled": "RuntimeError: CUDA graphs"}
    runs["lcm4-512"]["guidance"] = 2.0
    del runs["sdxl-1024"]
    a, b, c, d = results(runs)
    assert a == "FAIL"
    assert b.startswith("not measured") and "CUDA graphs" in b
    assert c.startswith("not applicable") and "guidance" in c
    assert d.startswith("not measured: no sdxl-1024.json")


def test_another_card_is_named_with_the_result():
    runs = passing_runs()
    runs["sd15-512"]["machine"] = "NVIDIA H100 80GB HBM3"
    assert targets.target_b(runs).result == "PASS (on NVIDIA H100 80GB HBM3; the target is for an H200)"


def test_markdown_names_card_versions_and_every_row(tmp_path):
    for name, run in passing_runs().items():
        (tmp_path / f"{name}.json").write_text(json.dumps(run))
    assert targets.main([str(tmp_path), "--markdown", str(tmp_path / "targets.md")]) == 0
    text = (tmp_path / "targets.md").read_text()
    assert "NVIDIA H200, torch 2.11.0+cu130, diffusers 0.42.1" in text
    assert "| ours, compiled | 0.440 |" in text
    assert text.count("| PASS |") == 4


def test_targets_refuses_a_missing_folder(tmp_path, capsys):
    assert targets.main([str(tmp_path / "absent")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
