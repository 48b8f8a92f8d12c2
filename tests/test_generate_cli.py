"""`t2i-adapter generate`: PNGs with parameters, --from-png reproduces, bad input exits 2 with one line."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from t2i_adapter.interfaces.cli.main import main
from t2i_adapter.io.png import read_png_parameters
from tiny_models import save_tiny_sd, tiny_adapter


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    save_tiny_sd(root / "model")
    tiny_adapter(seed=1).save_pretrained(root / "adapter")
    tiny_adapter(in_channels=1, seed=2).save_pretrained(root / "edge-adapter")
    tiny_adapter(sdxl=True).save_pretrained(root / "xl-adapter")
    picture = Image.new("RGB", (70, 50), "white")
    ImageDraw.Draw(picture).rectangle((10, 10, 50, 40), fill=(30, 30, 220), outline="black", width=2)
    picture.save(root / "cond.png")
    (root / "not-an-image.png").write_bytes(b"hello, not a png")
    Image.new("RGB", (8, 8)).save(root / "plain.png")
    return root


def base_args(files, out) -> list[str]:
    return [
        "generate",
        "--model",
        str(files / "model"),
        "--prompt",
        "a blue box",
        "--adapter",
        str(files / "adapter"),
        "--cond",
        str(files / "cond.png"),
        "--steps",
        "2",
        "--max-resolution",
        "4096",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]


def test_generate_writes_png_with_parameters_and_from_png_reproduces(files, tmp_path, capsys):
    out = tmp_path / "image.png"
    args = base_args(files, out) + [
        "--adapter",
        str(files / "edge-adapter"),
        "--cond",
        str(files / "cond.png"),
    ]
    args += [
        "--cond-type",
        "none",
        "--cond-type",
        "canny",
        "--adapter-weight",
        "0.9",
        "--adapter-weight",
        "0.4",
    ]
    args += ["--adapter-range", "0:1", "--adapter-range", "0:0.5", "--seed", "9", "--save-cond"]
    assert main(args) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out), str(tmp_path / "image-cond-0.png"), str(tmp_path / "image-cond-1.png")]
    parameters = read_png_parameters(out)
    assert parameters["seed"] == 9 and parameters["prompt"] == "a blue box"
    assert [a["weight"] for a in parameters["adapters"]] == [0.9, 0.4]
    assert parameters["adapters"][1]["end"] == 0.5 and parameters["adapters"][1]["cond_type"] == "canny"
    assert Image.open(tmp_path / "image-cond-1.png").mode == "L"

    again = tmp_path / "again.png"
    assert main(["generate", "--from-png", str(out), "--out", str(again)]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))
    # a flag beside --from-png overrides the record
    other = tmp_path / "other.png"
    assert main(["generate", "--from-png", str(out), "--seed", "10", "--out", str(other)]) == 0
    assert read_png_parameters(other)["seed"] == 10
    assert not np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(other)))


def test_several_images_into_a_folder(files, tmp_path, capsys):
    out = tmp_path / "folder"
    assert main(base_args(files, out) + ["--num-images", "2", "--seed", "4"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["4-0.png", "4-1.png"]
    assert capsys.readouterr().out.split() == [str(out / "4-0.png"), str(out / "4-1.png")]


BAD_INPUTS = {
    "missing condition": (["--cond", "{root}/nope.png"], "nope.png"),
    "not an image": (["--cond", "{root}/not-an-image.png"], "not-an-image.png"),
    "unknown condition type": (["--cond-type", "cany"], "unknown condition type 'cany'"),
    "unknown scheduler": (["--scheduler", "dddim"], "unknown scheduler 'dddim'"),
    "weights counted wrong": (
        ["--adapter-weight", "1", "--adapter-weight", "2"],
        "--adapter-weight given 2 times",
    ),
    "bad range": (["--adapter-range", "0.7:0.2"], "--adapter-range '0.7:0.2'"),
    "range not numbers": (["--adapter-range", "a:b"], "must be numbers"),
    "sdxl adapter on sd": (["--adapter", "{root}/xl-adapter", "--cond", "{root}/cond.png"], "SDXL adapter"),
    "missing model": (["--model", "{root}/no-model"], "no-model"),
    "missing adapter": (["--adapter", "{root}/no-adapter", "--cond", "{root}/cond.png"], "no-adapter"),
    "cond without adapter": (["--cond", "{root}/cond.png"], "--cond"),
    "size and short edge": (["--width", "64", "--resize-short-edge", "64"], "not both"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_no_output(files, tmp_path, capsys, case):
    extra, expected = BAD_INPUTS[case]
    args = base_args(files, tmp_path / "out.png")
    extra = [part.format(root=files) for part in extra]
    if case in ("missing condition", "not an image"):
        args[args.index("--cond") + 1] = extra[1]
    elif case == "missing model":
        args[args.index("--model") + 1] = extra[1]
    else:
        args += extra
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error and "Traceback" not in error
    assert expected in error
    assert list(tmp_path.iterdir()) == []


def test_from_png_without_parameters(files, tmp_path, capsys):
    assert main(["generate", "--from-png", str(files / "plain.png"), "--out", str(tmp_path / "x.png")]) == 2
    assert "has no generation parameters" in capsys.readouterr().err
    assert main(["generate", "--prompt", "x"]) == 2
    assert "--model is required" in capsys.readouterr().err


def test_real_process_prints_exactly_one_line(files, tmp_path):
    """Run as users do: nothing else on stderr (no warnings, no progress bars), exit status 2."""
    import subprocess
    import sys

    args = base_args(files, tmp_path / "out.png")  # the model loads, then the adapter is missing
    args[args.index("--adapter") + 1] = str(files / "no-adapter")
    completed = subprocess.run(
        [sys.executable, "-m", "t2i_adapter.interfaces.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 2
    assert completed.stderr.count("\n") == 1 and completed.stderr.startswith("error: ")
    assert completed.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_from_png_uses_saved_conditions_when_the_originals_are_gone(files, tmp_path, capsys):
    import shutil

    condition = tmp_path / "moved-away.png"
    shutil.copy(files / "cond.png", condition)
    out = tmp_path / "out" / "image.png"
    args = base_args(files, out) + ["--adapter", str(files / "edge-adapter"), "--cond", str(condition)]
    args[args.index("--cond") + 1] = str(condition)
    args += ["--cond-type", "none", "--cond-type", "canny", "--save-cond"]
    assert main(args) == 0
    condition.unlink()
    capsys.readouterr()
    again = tmp_path / "again.png"
    assert main(["generate", "--from-png", str(out), "--out", str(again)]) == 0
    assert "using the saved condition map" in capsys.readouterr().err
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))
    assert [a["cond_type"] for a in read_png_parameters(again)["adapters"]] == ["none", "none"]
