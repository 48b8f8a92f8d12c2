"""Batch generation from a JSONL file: same images as single runs, models loaded once, bad lines
reported by number while the rest go on, reruns skip what exists, the split over processes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from t2i_adapter.generation.api import generate
from t2i_adapter.generation.batch import read_jobs, run_jobs, share_of
from t2i_adapter.generation.cache import ModelCache
from t2i_adapter.io.png import read_png_parameters
from tiny_models import save_tiny_sd, tiny_adapter


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("batch")
    save_tiny_sd(root / "model")
    tiny_adapter(seed=1).save_pretrained(root / "adapter")
    picture = Image.new("RGB", (70, 50), "white")
    ImageDraw.Draw(picture).rectangle((10, 10, 50, 40), fill=(30, 30, 220), outline="black", width=2)
    picture.save(root / "cond.png")
    return root


def write_jobs(path: Path, lines: list) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def job(files: Path, cond: str = "cond.png", **fields) -> dict:
    """A line whose condition path is taken from the jobs file's folder (`files`)."""
    return {"prompt": "a blue box", "adapters": [{"adapter": str(files / "adapter"), "cond": cond}], **fields}


DEFAULTS = {"steps": 2, "max_resolution": 4096, "device": "cpu"}


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_batch_equals_single_runs_loads_once_and_resumes(files, tmp_path):
    jobs_file = write_jobs(
        files / "jobs.jsonl",
        [
            job(files, seed=3, model=str(files / "model")),
            job(files, seed=4, id="two-images", num_images=2, model=str(files / "model")),
            "",
            job(files, seed=5, model=str(files / "model"), guidance_scale=3.0),
        ],
    )
    jobs, failures = read_jobs(jobs_file, DEFAULTS)
    assert failures == [] and [j.line for j in jobs] == [1, 2, 4]
    cache = ModelCache()
    report = run_jobs(jobs, tmp_path, cache=cache)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "000001.png",
        "000004.png",
        "two-images-0.png",
        "two-images-1.png",
    ]
    assert report.failures == [] and report.existing == 0 and len(report.written) == 4
    assert cache.loads == 2  # the base model and the adapter, once for all lines

    single = generate(jobs[2].settings)  # the same settings, run alone
    assert np.array_equal(pixels(tmp_path / "000004.png"), np.asarray(single.images[0]))
    assert read_png_parameters(tmp_path / "000004.png") == single.settings.to_dict()
    assert read_png_parameters(tmp_path / "000004.png")["guidance_scale"] == 3.0
    assert not np.array_equal(pixels(tmp_path / "000001.png"), pixels(tmp_path / "000004.png"))

    (tmp_path / "two-images-1.png").unlink()  # a half-finished line runs again
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    again = run_jobs(jobs, tmp_path, cache=cache)
    assert again.existing == 2 and [p.name for p in again.written] == ["two-images-0.png", "two-images-1.png"]
    assert (tmp_path / "000001.png").stat().st_mtime_ns == stamps["000001.png"]


def test_bad_lines_are_reported_by_number_and_the_rest_go_on(files, tmp_path):
    model, cond = str(files / "model"), str(files / "cond.png")
    jobs_file = write_jobs(
        tmp_path / "jobs.jsonl",
        [
            job(files, cond, model=model),
            "{not json",
            job(files, cond, model=model, promt="typo"),
            job(files, cond, model=model, id="../escape"),
            job(files, cond, model=model, steps=0),
            job(files, cond, model=model, id="1"),
            job(files, cond, model=model, id="1"),
            job(files, "gone.png", model=model),
            ["a list"],
        ],
    )
    jobs, failures = read_jobs(jobs_file, DEFAULTS)
    problems = {failure.line: failure.problem for failure in failures}
    assert set(problems) == {2, 3, 4, 5, 7, 9}
    assert "not valid JSON" in problems[2]
    assert "unknown field 'promt'" in problems[3]
    assert "not a file name" in problems[4]
    assert "steps must be a whole number from 1 to 1000, not 0" in problems[5]
    assert "already used by line 6" in problems[7]
    assert "not a JSON object" in problems[9]
    report = run_jobs(jobs, tmp_path / "out")
    assert [(f.line, "gone.png: no such file" in f.problem) for f in report.failures] == [(8, True)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["000001.png", "1.png"]


def test_processes_split_the_lines_whatever_exists():
    class Job:
        def __init__(self, line):
            self.line = line

    jobs = [Job(line) for line in (1, 2, 3, 5, 6, 9)]
    shares = [[j.line for j in share_of(jobs, 3, rank)] for rank in range(3)]
    assert shares == [[1], [2, 5], [3, 6, 9]]
    assert sorted(line for share in shares for line in share) == [1, 2, 3, 5, 6, 9]


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


def cli_defaults(files: Path) -> list[str]:
    return ["--model", str(files / "model"), "--steps", "2", "--max-resolution", "4096", "--device", "cpu"]


def test_cli_batch_equals_single_generate_calls_and_reports_bad_lines(files, tmp_path, capsys):
    from t2i_adapter.interfaces.cli.main import main

    jobs_file = write_jobs(
        tmp_path / "jobs.jsonl",
        [
            job(files, str(files / "cond.png"), seed=11),
            "[1, 2]",
            job(files, str(files / "cond.png"), id="b", seed=12),
        ],
    )
    out = tmp_path / "out"
    assert main(["generate", "--batch", str(jobs_file), "--out-dir", str(out), *cli_defaults(files)]) == 2
    captured = capsys.readouterr()
    assert captured.out.split() == [str(out / "000001.png"), str(out / "b.png")]
    assert f"error: {jobs_file}:2: not a JSON object" in captured.err
    assert "batch: 2 image(s) written, 0 line(s) already done, 1 line(s) failed" in captured.err

    single = tmp_path / "single.png"
    args = [
        "generate",
        "--prompt",
        "a blue box",
        "--adapter",
        str(files / "adapter"),
        "--cond",
        str(files / "cond.png"),
    ]
    assert main([*args, "--seed", "12", "--out", str(single), *cli_defaults(files)]) == 0
    assert np.array_equal(pixels(single), pixels(out / "b.png"))
    assert read_png_parameters(single) == read_png_parameters(out / "b.png")

    write_jobs(
        jobs_file,
        [job(files, str(files / "cond.png"), seed=11), job(files, str(files / "cond.png"), id="b", seed=12)],
    )
    assert main(["generate", "--batch", str(jobs_file), "--out-dir", str(out), *cli_defaults(files)]) == 0
    assert "0 image(s) written, 2 line(s) already done, 0 line(s) failed" in capsys.readouterr().err

    for extra, message in (
        (["--out", "x.png"], "--out does not go with --batch"),
        ([], "--batch needs --out-dir"),
    ):
        assert main(["generate", "--batch", str(jobs_file), *extra]) == 2
        assert message in capsys.readouterr().err
    assert main(["generate", "--batch", str(tmp_path / "none.jsonl"), "--out-dir", str(out)]) == 2
    assert "none.jsonl: no such jobs file" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_split_the_lines_and_make_the_same_images(files, tmp_path):
    import os
    import subprocess
    import sys

    from test_training import _free_port

    cond = str(files / "cond.png")
    jobs_file = write_jobs(tmp_path / "jobs.jsonl", [job(files, cond, seed=seed) for seed in (21, 22, 23)])
    jobs, _ = read_jobs(jobs_file, {**DEFAULTS, "model": str(files / "model")})
    alone = tmp_path / "alone"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the launched processes' thread count: the same float summation order
    try:
        run_jobs(jobs, alone)
    finally:
        torch.set_num_threads(threads)
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "000003.png").write_bytes((alone / "000003.png").read_bytes())  # done already
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), "-m", "t2i_adapter.interfaces.cli.main",
        "generate", "--batch", str(jobs_file), "--out-dir", str(tmp_path / "two"), *cli_defaults(files),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(result.stdout.split()) == [str(tmp_path / "two" / f"00000{n}.png") for n in (1, 2)]
    assert "2 image(s) written, 1 line(s) already done, 0 line(s) failed" in result.stderr
    for name in ("000001.png", "000002.png"):
        assert np.array_equal(pixels(alone / name), pixels(tmp_path / "two" / name))
        assert read_png_parameters(alone / name) == read_png_parameters(tmp_path / "two" / name)
