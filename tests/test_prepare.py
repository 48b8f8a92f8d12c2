"""`data prepare`: every source format into shards, computed conditions with their options, bad input,
two processes writing the same bytes as one, and SIGKILL then --resume giving the same shards."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from t2i_adapter.conditions import registry
from t2i_adapter.conditions.registry import preprocess
from t2i_adapter.conditions.tensor import resize_condition
from t2i_adapter.errors import T2IAdapterError
from t2i_adapter.interfaces.cli.main import main as cli
from t2i_adapter.training.data import open_dataset
from t2i_adapter.training.prepare import PrepareSettings, prepare_dataset
from test_data_formats import TAG, WRITERS, make_samples, write_dataset, write_meta

LAUNCH = [
    sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
]  # fmt: skip


def shard_examples(folder: Path, cond_type: str | None = None) -> dict[str, tuple]:
    """{source: (example, json member, members)} of every sample in a prepared folder, read as a training set."""
    source = open_dataset(folder, cond_type=cond_type)
    found = {}
    for shard in source.shards:
        for raw in source.read_shard(shard):
            described = json.loads(raw.members["json"])
            found[described["source"]] = (source.decode(raw), described, raw.members)
    return found


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every output file but the per-process bookkeeping (`.prepare/`)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# Formats, conditions, bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(WRITERS))
def test_every_format_prepares_to_shards_the_trainer_reads_back(tmp_path, kind):
    path = write_dataset(kind, tmp_path)
    cond_type = TAG if kind != "jsonl" else None
    out = tmp_path / "prepared"
    summary = prepare_dataset(
        PrepareSettings(str(path), str(out), cond_type=cond_type, samples_per_shard=4, progress=False)
    )
    source = open_dataset(path, cond_type=cond_type)
    originals = (
        {
            f"{shard}:{raw.key}": source.decode(raw)
            for shard in source.shards
            for raw in source.read_shard(shard)
        }
        if source.streamed
        else {source.records[i].where: source.load(i) for i in range(len(source))}
    )
    prepared = shard_examples(out, cond_type)
    assert summary.samples == 10 and not summary.skipped
    assert set(prepared) == set(originals)
    for where, original in originals.items():
        example, described, _ = prepared[where]
        assert np.array_equal(pixels(example.image), pixels(original.image))
        expected = resize_condition(original.condition, *original.image.size)  # at its image's size
        assert np.array_equal(pixels(example.condition), pixels(expected))
        assert example.caption == original.caption == described["caption"]
        assert described["condition"] == {"from": "dataset", "type": cond_type, "options": {}}
    index = json.loads((out / "index.json").read_text())
    assert index["samples"] == 10 and sum(s["samples"] for s in index["shards"]) == 10
    expected_shards = 2 if kind == "webdataset" else 3  # shards in, shards out; else 4 + 4 + 2
    assert [s["name"] for s in index["shards"]] == [f"shard-{i:06d}.tar" for i in range(expected_shards)]


def test_computed_condition_records_the_preprocessor_and_its_options(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index, (image, _, caption) in enumerate(make_samples(3)):
        image.save(folder / f"{index}.png")
        (folder / f"{index}.txt").write_text(caption)
    out = tmp_path / "canny"
    args = ["data", "prepare", str(folder), "--out", str(out), "--cond-type", "canny"]
    assert (
        cli(
            [
                *args,
                "--cond-option",
                "low_threshold=20",
                "--cond-option",
                "high_threshold=60",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "prepared 3 samples into 1 shards" in capsys.readouterr().out
    for where, (example, described, _) in shard_examples(out).items():
        original = Image.open(where).convert("RGB")
        expected = preprocess("canny", original, low_threshold=20, high_threshold=60)
        assert np.array_equal(pixels(example.condition), pixels(expected))
        assert described["condition"] == {
            "from": "preprocessor",
            "type": "canny",
            "options": {"low_threshold": 20, "high_threshold": 60},  # typed, as the preprocessor took them
        }


def test_a_model_preprocessor_runs_in_batches_and_matches_single_images(tmp_path, tiny_dpt):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index, (image, _, caption) in enumerate(make_samples(5)):
        image.save(folder / f"{index}.png")
        (folder / f"{index}.txt").write_text(caption)
    out = tmp_path / "depth"
    settings = PrepareSettings(
        str(folder),
        str(out),
        cond_type="depth",
        cond_options={"model": tiny_dpt},
        batch_size=3,
        progress=False,
    )
    assert prepare_dataset(settings).samples == 5
    for where, (example, described, _) in shard_examples(out).items():
        alone = preprocess("depth", Image.open(where).convert("RGB"), model=tiny_dpt)
        assert np.abs(pixels(example.condition).astype(int) - pixels(alone).astype(int)).max() <= 1
        assert described["condition"] == {
            "from": "preprocessor",
            "type": "depth",
            "options": {"model": tiny_dpt},
        }


def test_bad_sources_and_options_are_one_line_errors(tmp_path, capsys):
    picture = tmp_path / "picture.png"
    Image.new("RGB", (8, 8)).save(picture)
    empty = tmp_path / "empty"
    empty.mkdir()
    meta = write_meta(tmp_path / "data")
    cases = [
        ([str(tmp_path / "missing")], "no such file or folder"),
        ([str(empty)], "no images"),
        ([str(picture), "--cond-type", TAG], "cannot read the meta file"),
        ([str(meta), "--cond-type", "canny", "--cond-option", "no_such=1"], "unknown canny option 'no_such'"),
        ([str(meta), "--cond-type", TAG, "--cond-model", "x"], f"has its own '{TAG}' maps"),
        ([str(meta), "--cond-type", "canny", "--cond-option", "oops"], "not of the form KEY=VALUE"),
        ([str(meta), "--cond-type", TAG, "--model", "demo", "--resolution", "100"], "multiple of 64"),
    ]
    for arguments, message in cases:
        assert cli(["data", "prepare", *arguments, "--out", str(tmp_path / "out"), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out" / "index.json").exists()


def test_an_output_folder_of_another_run_is_refused_unless_resuming_that_run(tmp_path, capsys):
    meta = write_meta(tmp_path / "data")
    out = tmp_path / "out"
    run = ["data", "prepare", str(meta), "--out", str(out), "--cond-type", TAG, "--no-progress"]
    assert cli(run) == 0
    before = folder_bytes(out)
    assert cli(run) == 2
    assert "already holds the shards of a prepare run; pass --resume" in capsys.readouterr().err
    assert cli([*run, "--resume", "--samples-per-shard", "3"]) == 2
    assert "other settings (samples_per_shard: 1000 then, 3 now)" in capsys.readouterr().err
    assert cli([*run, "--resume"]) == 0  # nothing left to do: the same files
    assert folder_bytes(out) == before
    foreign = tmp_path / "foreign"
    write_dataset("webdataset", foreign)
    assert cli([*run[:3], "--out", str(foreign / "shards"), "--cond-type", TAG, "--resume"]) == 2
    assert "no prepare run wrote" in capsys.readouterr().err


def test_unreadable_samples_and_preprocessor_failures_are_skipped_and_reported(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(5):
        Image.new("RGB", (64 + 8 * index, 64), (40 * index, 90, 200)).save(folder / f"{index}.png")
        (folder / f"{index}.txt").write_text(f"picture {index}")
    (folder / "2.png").write_bytes(b"not an image")

    def fails_on_wide(image: Image.Image) -> Image.Image:
        if image.width > 90:
            raise RuntimeError("cannot handle wide images\nsecond line of the message")
        return image.convert("L")

    spec = registry.ConditionSpec("fragile", 1, "fails on wide images", False, fails_on_wide)
    monkeypatch.setitem(registry._specs, "fragile", spec)
    out = tmp_path / "out"
    assert (
        cli(["data", "prepare", str(folder), "--out", str(out), "--cond-type", "fragile", "--no-progress"])
        == 0
    )
    captured = capsys.readouterr()
    assert "prepared 3 samples into 1 shards" in captured.out and "2 skipped" in captured.out
    skipped = [line for line in captured.err.splitlines() if line.startswith("skipped: ")]
    assert len(skipped) == 2
    report = (out / "report.txt").read_text()
    assert f"{folder / '2.png'}: {folder / '2.png'}: not an image" in report
    assert "the 'fragile' preprocessor failed: RuntimeError: cannot handle wide images" in report
    assert "second line" not in report
    assert sorted(Path(w).name for w in shard_examples(out)) == ["0.png", "1.png", "3.png"]


# ---------------------------------------------------------------------------------------------
# Latents, processes, kill and resume
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dpt(tmp_path_factory) -> str:
    from tiny_models import save_tiny_dpt

    return str(save_tiny_dpt(tmp_path_factory.mktemp("tiny-dpt")))


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    from tiny_models import save_tiny_sd

    return save_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    """24 samples: enough shards (one sample each) for a kill to land mid-run."""
    return write_meta(tmp_path_factory.mktemp("many"), count=24)


def prepare_args(meta: Path, out: Path, model: Path) -> list[str]:
    return [
        "data", "prepare", str(meta), "--out", str(out), "--cond-type", TAG, "--model", str(model),
        "--resolution", "64", "--batch-size", "1", "--samples-per-shard", "1", "--no-progress",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def reference(tiny_sd, many, tmp_path_factory) -> dict[str, bytes]:
    """One uninterrupted single-process run (same thread count as the runs it is compared with)."""
    out = tmp_path_factory.mktemp("reference") / "prepared"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli(prepare_args(many, out, tiny_sd)) == 0
    finally:
        torch.set_num_threads(threads)
    return folder_bytes(out)


def test_latents_are_what_cached_training_computes(tiny_sd, many, reference, tmp_path):
    from safetensors.torch import load

    from t2i_adapter.generation.base_model import load_base_model
    from t2i_adapter.training.cache import encode_batch
    from t2i_adapter.training.data.transforms import prepare_example

    assert len([name for name in reference if name.endswith(".tar")]) == 24
    out = tmp_path / "prepared"
    out.mkdir()
    for name, data in reference.items():
        (out / name).write_bytes(data)
    source = open_dataset(many, cond_type=TAG)
    base = load_base_model(str(tiny_sd))
    wheres = [record.where for record in source.records]
    for where, (_, _, members) in list(shard_examples(out, TAG).items())[:3]:
        stored = load(members["latents.safetensors"])
        original = source.load(wheres.index(where))
        item = prepare_example(
            original,
            resolution=64,
            condition_channels=1,
            center_crop=True,
            random_flip=False,
            rng=random.Random(0),
        )
        expected = encode_batch(base, item.pixels[None], [item.caption])
        for key in ("latent_mean", "latent_std", "embeds"):
            torch.testing.assert_close(stored[key], expected[key][0], rtol=0, atol=0)
        assert stored["time_ids"].tolist() == [*item.original_size, *item.crop_top_left, 64, 64]
    assert "embeds" in load(reference["empty.safetensors"])


@pytest.mark.slow
def test_two_processes_write_the_same_bytes_as_one(tiny_sd, many, reference, tmp_path):
    from test_training import _free_port

    out = tmp_path / "two"
    command = [*LAUNCH, "--main_process_port", str(_free_port()), "-m", "t2i_adapter.interfaces.cli.main"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        command + prepare_args(many, out, tiny_sd)[:-1], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("prepared 24 samples into 24 shards") == 1  # the main process reports
    assert "rank 0" in result.stderr and "rank 1" in result.stderr and "all" in result.stderr  # bars
    assert folder_bytes(out) == reference
    ranks = [json.loads((out / ".prepare" / f"rank-0000{r}.json").read_text()) for r in (0, 1)]
    assert [entry["done"] for entry in ranks] == [12, 12] and all(entry["finished"] for entry in ranks)


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_shards(tiny_sd, many, reference, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "t2i_adapter.interfaces.cli.main", *prepare_args(many, out, tiny_sd)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not list(out.glob("shard-*.tar")) and process.poll() is None:
            assert time.monotonic() < deadline, "no shard within 180 s"
            time.sleep(0.01)
        time.sleep(random.uniform(0.0, 0.05))
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    written = len(list(out.glob("shard-*.tar")))
    assert 1 <= written < 24 and not (out / "index.json").exists()  # killed mid-run
    with pytest.raises(T2IAdapterError, match="pass --resume"):
        prepare_dataset(PrepareSettings(str(many), str(out), cond_type=TAG, progress=False))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli([*prepare_args(many, out, tiny_sd), "--resume"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert folder_bytes(out) == reference
    assert not list(out.glob(".shard-*"))  # the killed write's leftover is gone
