"""Hostile input (issue 15, items 11-14): each ends in one `error:` line, exit 2, nothing written.

The corpus is built here: text that is not a pickle, code-running pickles (whose marker file must
never appear), FIFOs and links to /dev/zero in a temp folder, JSON nested 100,000 deep, a tar cut
in the middle, and a full disk made by patching the writer (no tmpfs). Every command runs in a
thread with a deadline, so a regression to a hang fails instead of hanging the suite.
"""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import shutil
import tarfile
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from t2i_adapter.demo_weights import demo_model_path
from t2i_adapter.errors import InputFileError
from t2i_adapter.interfaces.cli.main import main as cli
from t2i_adapter.io.text import CAPTION_MAX_BYTES, parse_json, read_text
from t2i_adapter.training import checkpointing
from test_data_formats import TAG, _png, make_samples, write_jsonl, write_meta, write_shards

DEADLINE = 120  # seconds; every command here takes a few (a hang used to take forever)
DEEP = 100_000
HAS_FIFO = hasattr(os, "mkfifo")


class PlantMarker:
    """A pickle that, if ever unpickled unsafely, creates the file `path`."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def run(args: list[str], capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of the CLI, failing the test if it does not end in time."""
    result: dict = {}

    def target() -> None:
        try:
            result["status"] = cli(args)
        except BaseException as error:  # re-raised below, in the test's thread
            result["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(DEADLINE)
    if thread.is_alive():
        pytest.fail(f"t2i-adapter {' '.join(args[:2])} hung for {DEADLINE} s")
    if "error" in result:
        raise result["error"]
    out, err = capsys.readouterr()
    return result["status"], out, err


def one_error_line(status: int, err: str, *words: str) -> str:
    """The single `error:` line of a refused command, which names `words`."""
    assert status == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


@pytest.fixture(scope="module")
def condition(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cond") / "sketch.png"
    Image.new("RGB", (64, 64), "black").save(path)
    return path


def generate_args(condition: Path, out: Path, model: str = "demo", adapter: str = "demo:sketch") -> list[str]:
    return [
        "generate",
        "--model",
        model,
        "--adapter",
        adapter,
        "--cond",
        str(condition),
        "--cond-type",
        "sketch",
        "--prompt",
        "a square",
        "--steps",
        "2",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]


# ---------------------------------------------------------------------------------------------
# 11: an adapter that is no pickle; a model folder whose .bin would run code
# ---------------------------------------------------------------------------------------------


def test_a_text_file_as_adapter_is_one_line(tmp_path, condition, capsys):
    passwd = tmp_path / "passwd"  # what /etc/passwd looks like, on any system
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n")
    out = tmp_path / "out" / "image.png"
    status, _, err = run(generate_args(condition, out, adapter=str(passwd)), capsys)
    one_error_line(status, err, str(passwd), "not a PyTorch checkpoint")
    assert not out.parent.exists()


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_a_model_whose_text_encoder_bin_runs_code_is_refused_and_never_run(
    tmp_path, condition, capsys, protocol
):
    model = tmp_path / "model"
    shutil.copytree(demo_model_path(), model)
    for weights in (model / "text_encoder").glob("*.safetensors"):
        weights.unlink()
    marker = tmp_path / "MARKER"
    bin_file = model / "text_encoder" / "pytorch_model.bin"
    bin_file.write_bytes(pickle.dumps({"text_model.weight": PlantMarker(marker)}, protocol=protocol))
    out = tmp_path / "out.png"
    status, _, err = run(generate_args(condition, out, model=str(model)), capsys)
    line = one_error_line(status, err, str(bin_file))
    if protocol == 2:  # the safe unpickler reaches the call, and says what it would have called
        assert "refused: the pickle calls io.open" in line
    assert not marker.exists(), "the pickle ran"
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# 12: train --resume from a broken checkpoint
# ---------------------------------------------------------------------------------------------


def train_args(data: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [
        "train",
        "--model",
        "demo",
        "--data",
        str(data),
        "--cond-type",
        TAG,
        "--resolution",
        "64",
        "--batch-size",
        "2",
        "--max-steps",
        str(steps),
        "--checkpoint-every",
        "1",
        "--output-dir",
        str(out),
        "--no-progress",
        *extra,
    ]


@pytest.fixture(scope="module")
def meta(tmp_path_factory) -> Path:
    return write_meta(tmp_path_factory.mktemp("data"), count=4)


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory, meta) -> Path:
    """A demo run of two steps, a checkpoint after each."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert cli(train_args(meta, out, 2)) == 0
    return out


def _state(path: Path) -> dict:
    return torch.load(path, weights_only=True)


BROKEN_STATES = {
    "empty": lambda path, marker: path.write_bytes(b""),
    "empty dict": lambda path, marker: torch.save({}, path),
    "list": lambda path, marker: torch.save([1, 2], path),
    "string step": lambda path, marker: torch.save({**_state(path), "step": "3"}, path),
    "code-running pickle": lambda path, marker: path.write_bytes(
        pickle.dumps({"step": PlantMarker(marker)}, protocol=2)
    ),
    "corrupt adapter header": lambda path, marker: (path.parent / checkpointing.ADAPTER_FILE).write_bytes(
        b"\xff" * 8 + b"{not json"
    ),
}
EXPECTED = {
    "empty": "is not a training state (empty file)",
    "empty dict": "is not a training state (no 'step')",
    "list": "is not a training state (it holds a list)",
    "string step": "is not a training state ('step' is a str)",
    "code-running pickle": "refused: the pickle calls io.open",
    "corrupt adapter header": "adapter.safetensors: not a valid safetensors file",
}


@pytest.mark.parametrize("case", list(BROKEN_STATES))
def test_resume_from_a_broken_checkpoint_names_it_and_offers_the_previous(
    two_checkpoints, meta, tmp_path, capsys, case
):
    out = tmp_path / "run"
    shutil.copytree(two_checkpoints, out)
    latest = out / "checkpoints" / "step-00000002"
    marker = tmp_path / "MARKER"
    BROKEN_STATES[case](latest / checkpointing.STATE_FILE, marker)
    before = files_under(out)
    status, _, err = run(train_args(meta, out, 3, "--resume"), capsys)
    line = one_error_line(status, err, EXPECTED[case], "step-00000002")
    assert "previous checkpoint step-00000001" in line and "--resume" in line
    assert not marker.exists(), "the pickle ran"
    assert files_under(out) == before  # no new checkpoint, nothing removed
    assert checkpointing.load_checkpoint(out / "checkpoints" / "step-00000001")[1]["step"] == 1


def test_resume_from_the_only_checkpoint_broken_says_there_is_none_before(
    two_checkpoints, meta, tmp_path, capsys
):
    out = tmp_path / "run"
    shutil.copytree(two_checkpoints, out)
    shutil.rmtree(out / "checkpoints" / "step-00000001")
    (out / "checkpoints" / "step-00000002" / checkpointing.STATE_FILE).write_bytes(b"")
    status, _, err = run(train_args(meta, out, 3, "--resume"), capsys)
    one_error_line(status, err, "(empty file)", "no earlier checkpoint")


# ---------------------------------------------------------------------------------------------
# 13: training data: FIFOs, /dev/zero, deep JSON, samples without images, truncated shards
# ---------------------------------------------------------------------------------------------


def _link_to_dev_zero(path: Path) -> None:
    path.unlink()
    os.symlink("/dev/zero", path)


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


@pytest.mark.skipif(not HAS_FIFO or not os.path.exists("/dev/zero"), reason="needs FIFOs and /dev/zero")
def test_small_text_reader_refuses_fifos_devices_and_oversized_files(tmp_path):
    fifo, zero, big = tmp_path / "fifo.txt", tmp_path / "zero.txt", tmp_path / "big.txt"
    os.mkfifo(fifo)
    os.symlink("/dev/zero", zero)
    big.write_bytes(b"a" * (CAPTION_MAX_BYTES + 1))
    for path, problem in ((fifo, "named pipe"), (zero, "character device"), (big, "larger than 1 MiB")):
        with pytest.raises(InputFileError, match=problem):
            read_text(path, max_bytes=CAPTION_MAX_BYTES, what="the caption file")
    with pytest.raises(InputFileError, match="nested too deeply"):
        parse_json("[" * DEEP + "]" * DEEP, "deep.json")


@pytest.fixture(scope="module")
def hostile_meta(tmp_path_factory) -> Path:
    """Six samples: a caption FIFO, a caption linked to /dev/zero, a condition FIFO, three good."""
    meta = write_meta(tmp_path_factory.mktemp("hostile"), count=6)
    images = meta.parent / "images"
    _fifo(images / "s00.txt")
    _link_to_dev_zero(images / "s01.txt")
    _fifo(images / f"s02.{TAG}.png")
    return meta


@pytest.mark.skipif(not HAS_FIFO or not os.path.exists("/dev/zero"), reason="needs FIFOs and /dev/zero")
def test_data_check_reports_fifos_and_devices_instead_of_hanging(hostile_meta, capsys):
    status, out, _ = run(["data", "check", str(hostile_meta), "--cond-type", TAG], capsys)
    assert status == 0, out
    assert "samples: 6 checked, 3 usable, 3 with problems" in out
    assert "s00.txt: cannot read the caption file: it is a named pipe (FIFO)" in out
    assert "s01.txt: cannot read the caption file: it is a character device" in out
    assert f"s02.{TAG}.png: cannot read the image: it is a named pipe (FIFO)" in out


@pytest.mark.skipif(not HAS_FIFO or not os.path.exists("/dev/zero"), reason="needs FIFOs and /dev/zero")
def test_train_skips_fifos_and_devices_instead_of_hanging(hostile_meta, tmp_path, capsys):
    status, _, err = run(train_args(hostile_meta, tmp_path / "run", 1), capsys)
    assert status == 0, err
    assert (tmp_path / "run" / "diffusion_pytorch_model.safetensors").is_file()


def test_jsonl_nested_100000_deep_is_a_counted_problem(tmp_path, capsys):
    manifest = write_jsonl(tmp_path, count=3)
    with open(manifest, "a", encoding="utf-8") as handle:
        handle.write("[" * DEEP + "]" * DEEP + "\n")
    status, out, _ = run(["data", "check", str(manifest), "--cond-type", "cond"], capsys)
    assert status == 0, out
    assert "samples: 4 checked, 3 usable, 1 with problems" in out
    assert f"{manifest}:4: the line is nested too deeply" in out


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_hostile_shard(folder: Path) -> Path:
    """A sample without an image first, one with a .json nested 100,000 deep, then four good."""
    folder.mkdir(parents=True)
    image, edges, _ = make_samples(1)[0]
    good = write_shards(folder / "good", count=4, shards=1) / "shard-0000.tar"
    with tarfile.open(folder / "shard-0000.tar", "w") as tar:
        _add(tar, "000000a.txt", b"a caption and a condition, but no image")
        _add(tar, f"000000a.{TAG}.png", _png(edges))
        _add(tar, "000000b.png", _png(image))
        _add(tar, f"000000b.{TAG}.png", _png(edges))
        _add(tar, "000000b.json", b"[" * DEEP + b"]" * DEEP)
        with tarfile.open(good) as source:
            for member in source.getmembers():
                tar.addfile(member, source.extractfile(member))
    shutil.rmtree(folder / "good")
    return folder


def test_webdataset_sample_without_image_or_with_deep_json_is_skipped(tmp_path, capsys):
    shards = write_hostile_shard(tmp_path / "shards")
    status, out, _ = run(["data", "check", str(shards), "--cond-type", TAG], capsys)
    assert status == 0, out
    assert "samples: 6 checked, 4 usable, 2 with problems" in out
    assert "000000a: no image member" in out and "000000b: the .json member is nested too deeply" in out
    status, _, err = run(train_args(shards, tmp_path / "run", 1), capsys)
    assert status == 0, err  # the first sample has no image: skipped, not the end of the run


def test_data_check_counts_add_up_on_a_truncated_shard(tmp_path, capsys):
    shard = write_shards(tmp_path / "shards", count=10, shards=1) / "shard-0000.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2 + 300])  # cut inside a member
    status, out, _ = run(["data", "check", str(shard.parent), "--cond-type", TAG], capsys)
    assert status == 0, out
    assert "samples: 7 checked, 6 usable, 1 with problems" in out
    assert "shard-0000.tar:000006: incomplete: the shard is truncated" in out
    report = json.loads(run(["data", "check", str(shard.parent), "--cond-type", TAG, "--json"], capsys)[1])
    assert report["checked"] == report["usable"] + len(report["problems"])


# ---------------------------------------------------------------------------------------------
# 14: a full disk during generate, convert and train
# ---------------------------------------------------------------------------------------------


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_during_generate_is_one_line_and_leaves_nothing(tmp_path, condition, capsys, monkeypatch):
    def half_then_full(self, target, *args, **kwargs):
        target.write(b"\x89PNG half")
        _disk_full()

    monkeypatch.setattr(Image.Image, "save", half_then_full)
    out = tmp_path / "out" / "image.png"
    out.parent.mkdir()
    status, _, err = run(generate_args(condition, out), capsys)
    one_error_line(status, err, "no space left on ", f"while writing {out}")
    assert files_under(out.parent) == set()


def test_disk_full_during_convert_keeps_the_old_output(tmp_path, capsys, monkeypatch):
    from safetensors import SafetensorError

    import t2i_adapter.checkpoints.save as save_module

    out = tmp_path / "sketch.safetensors"
    assert cli(["convert", "demo:sketch", "--to", "original", "--out", str(out)]) == 0
    capsys.readouterr()
    before = out.read_bytes()

    def wrapped_full(tensors, filename, metadata=None):  # how safetensors' Rust writer reports it
        Path(filename).write_bytes(b"half")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(save_module, "save_file", wrapped_full)
    status, _, err = run(
        ["convert", "demo:sketch", "--to", "original", "--out", str(out), "--overwrite"], capsys
    )
    one_error_line(status, err, "no space left on ", f"while writing {out}")
    assert out.read_bytes() == before and files_under(tmp_path) == {out.name}

    folder = tmp_path / "diffusers"
    monkeypatch.setattr("safetensors.torch.save_file", _disk_full)
    status, _, err = run(["convert", "demo:sketch", "--to", "diffusers", "--out", str(folder)], capsys)
    one_error_line(status, err, "no space left on ", f"while writing {folder}")
    assert files_under(tmp_path) == {out.name}


def test_disk_full_during_train_keeps_the_previous_checkpoint(meta, tmp_path, capsys, monkeypatch):
    real_save = torch.save
    saves = []

    def full_on_second_checkpoint(obj, path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 2:
            Path(path).write_bytes(b"half")
            _disk_full()
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpointing.torch, "save", full_on_second_checkpoint)
    out = tmp_path / "run"
    status, _, err = run(train_args(meta, out, 3), capsys)
    monkeypatch.setattr(checkpointing.torch, "save", real_save)
    line = one_error_line(status, err[err.find("error: ") :], "no space left on ", "step-00000002")
    assert "step-00000001 is intact" in line
    assert [p.name for p in checkpointing.list_checkpoints(out)] == ["step-00000001"]
    assert not list((out / "checkpoints").glob(".step-*"))  # the temporary folder is gone
    assert checkpointing.load_checkpoint(out / "checkpoints" / "step-00000001")[1]["step"] == 1


def test_disk_full_outside_the_atomic_writers_is_one_line(tmp_path, capsys, monkeypatch):
    import t2i_adapter.interfaces.cli.data as data_command

    report = tmp_path / "report.txt"

    def full(args):  # a plain write (logs, TensorBoard) on a full disk
        raise OSError(errno.ENOSPC, "No space left on device", str(report))

    monkeypatch.setattr(data_command, "run_check", full)
    status, _, err = run(["data", "check", str(tmp_path)], capsys)
    one_error_line(status, err, "no space left on ", f"while writing {report}")
