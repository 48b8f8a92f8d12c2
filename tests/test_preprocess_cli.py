"""`t2i-adapter preprocess`: outputs, exit codes and one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from t2i_adapter.conditions.options import parse_options
from t2i_adapter.errors import T2IAdapterError
from t2i_adapter.interfaces.cli.main import main
from t2i_adapter.io.png import read_png_parameters


@pytest.fixture
def square_png(tmp_path):
    image = Image.new("RGB", (96, 64), (0, 0, 0))
    ImageDraw.Draw(image).rectangle((20, 16, 70, 48), fill=(255, 255, 255))
    path = tmp_path / "square.png"
    image.save(path)
    return path


def run_cli(capsys, *argv):
    code = main(["preprocess", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(code, err, *fragments):
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


def test_canny_writes_a_grey_png_with_parameters(capsys, tmp_path, square_png):
    out = tmp_path / "maps" / "canny.png"
    code, stdout, err = run_cli(
        capsys, "--type", "canny", square_png, "--out", out, "--option", "low_threshold=50"
    )
    assert code == 0, err
    assert "wrote" in stdout and str(out) in stdout
    with Image.open(out) as written:
        assert written.mode == "L" and written.size == (96, 64)
        edges = np.asarray(written)
    assert edges.max() == 255 and edges[30, 45] == 0
    parameters = read_png_parameters(out)
    assert parameters["condition_type"] == "canny"
    assert parameters["options"] == {"low_threshold": 50}
    assert parameters["source"] == str(square_png)
    assert sorted(p.name for p in out.parent.iterdir()) == ["canny.png"]


def test_color_writes_rgb(capsys, tmp_path, square_png):
    out = tmp_path / "color.png"
    code, _, err = run_cli(capsys, "-t", "colour", square_png, "-o", out)
    assert code == 0, err
    assert Image.open(out).mode == "RGB"


def test_list_prints_every_condition(capsys):
    code, stdout, _ = run_cli(capsys, "--list")
    assert code == 0
    for name in ("canny", "color", "sketch", "threshold", "invert", "none"):
        assert any(line.startswith(name) for line in stdout.splitlines())
    assert "low_threshold=100" in stdout


def test_unknown_type_is_exit_2_listing_valid_names(capsys, tmp_path, square_png):
    out = tmp_path / "x.png"
    code, _, err = run_cli(capsys, "--type", "cany", square_png, "--out", out)
    assert_user_error(code, err, "'cany'", "canny", "sketch")
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("empty.png", b"", "empty"),
        ("notes.png", b"just some text\n", "not an image"),
        ("cut.png", None, "corrupt"),
    ],
)
def test_bad_images_are_exit_2_naming_the_file(capsys, tmp_path, square_png, name, content, fragment):
    bad = tmp_path / name
    if content is None:
        data = square_png.read_bytes()
        content = data[: len(data) // 2]
    bad.write_bytes(content)
    out = tmp_path / "out.png"
    code, _, err = run_cli(capsys, "--type", "canny", bad, "--out", out)
    assert_user_error(code, err, str(bad), fragment)
    assert not out.exists()


def test_missing_and_folder_inputs(capsys, tmp_path):
    code, _, err = run_cli(capsys, "--type", "canny", tmp_path / "nope.png", "--out", tmp_path / "o.png")
    assert_user_error(code, err, "nope.png", "no such file")
    code, _, err = run_cli(capsys, "--type", "canny", tmp_path, "--out", tmp_path / "o.png")
    assert_user_error(code, err, str(tmp_path), "folder")
    assert not (tmp_path / "o.png").exists()


def test_bomb_is_refused(capsys, tmp_path, square_png):
    code, _, err = run_cli(
        capsys, "--type", "none", square_png, "--out", tmp_path / "o.png", "--max-pixels", "100"
    )
    assert_user_error(code, err, str(square_png), "too large")


def test_bad_options_and_missing_arguments(capsys, tmp_path, square_png):
    out = tmp_path / "o.png"
    code, _, err = run_cli(capsys, "--type", "canny", square_png, "--out", out, "--option", "sigma=2")
    assert_user_error(code, err, "sigma", "low_threshold")
    code, _, err = run_cli(capsys, "--type", "canny", square_png, "--out", out, "--option", "oops")
    assert_user_error(code, err, "KEY=VALUE")
    code, _, err = run_cli(capsys, "--type", "canny", square_png, "--out", tmp_path / "o.jpg")
    assert_user_error(code, err, "o.jpg", ".png")
    code, _, err = run_cli(capsys, square_png)
    assert_user_error(code, err, "--type", "--out")
    assert not out.exists()


def test_output_into_an_existing_folder_name(capsys, tmp_path, square_png):
    folder = tmp_path / "taken.png"
    folder.mkdir()
    code, _, err = run_cli(capsys, "--type", "canny", square_png, "--out", folder)
    assert_user_error(code, err, "taken.png", "folder")


def test_parse_options_keeps_text_for_the_registry_to_type():
    # One parser for every KEY=VALUE flag: values stay text, and the registry converts each to
    # its option's type (so `model=123` stays a name, and `invert=on` is a bool only for a bool).
    assert parse_options(["a=1", " b = 0.5 ", "c=on", "d=hello", "e=[1]"]) == {
        "a": "1",
        "b": "0.5",
        "c": "on",
        "d": "hello",
        "e": "[1]",
    }
    with pytest.raises(T2IAdapterError):
        parse_options(["=3"])


@pytest.mark.parametrize("word, inverted", [("on", True), ("YES", True), ("1", True), ("off", False)])
def test_boolean_words_of_the_cli_are_the_registrys(capsys, tmp_path, square_png, word, inverted):
    out = tmp_path / f"{word}.png"
    code, _, err = run_cli(
        capsys, "--type", "threshold", square_png, "--out", out, "--option", f"invert={word}"
    )
    assert code == 0, err
    assert read_png_parameters(out)["options"] == {"invert": inverted}
