"""`t2i-adapter generate`: PNGs with parameters, --from-png reproduces, bad input exits 2 with one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from t2i_adapter.errors import T2IAdapterError
from t2i_adapter.generation.settings import GenerationSettings
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
    "range that never acts": (["--adapter-range", "0.5:0.5"], "a window with start == end never acts"),
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


# ---------------------------------------------------------------------------------------------
# Flags made from GenerationSettings / AdapterSpec fields (no model is loaded: parsing only)
# ---------------------------------------------------------------------------------------------


def _parse(argv: list[str]):
    from t2i_adapter.interfaces.cli.generate import settings_from_args
    from t2i_adapter.interfaces.cli.main import build_parser

    return settings_from_args(build_parser().parse_args(["generate", *argv]))


def _generate_parser():
    import argparse

    from t2i_adapter.interfaces.cli.main import build_parser

    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return subcommands.choices["generate"]


def _help_text() -> str:
    return " ".join(_generate_parser().format_help().split())


def test_every_settings_field_is_a_flag_that_reaches_the_settings():
    from dataclasses import fields

    from t2i_adapter.generation.settings import GenerationSettings, LoraSpec

    values = {
        "int": "3",
        "int | None": "96",
        "float": "2.5",
        "float | None": "0.5",
        "str": "x",
        "str | None": "y",
    }
    special = {
        "dtype": ("bf16", "bfloat16"),
        "model": ("m", "m"),
        "prompt": ("p", "p"),
        "prediction_type": ("v_prediction", "v_prediction"),
        "model_config": ("cfg", str(Path("cfg").absolute())),  # recorded absolute
        "device": ("cuda:1", "cuda:1"),  # a device name, checked before anything loads
        "init_image": ("pic.png", str(Path("pic.png").absolute())),  # recorded absolute
        "mask": ("mask.png", str(Path("mask.png").absolute())),
        "strength": ("0.5", 0.5),  # 0 < S <= 1
        "hires_strength": ("0.25", 0.25),
        "hires_upscaler": ("lanczos", "lanczos"),
    }
    argv, expected = [], {}
    for field in fields(GenerationSettings):
        # per-adapter flags; --resize-short-edge excludes --width, --hires-scale --mask
        if field.name in ("adapters", "resize_short_edge", "hires_scale"):
            continue
        flag = "--" + field.metadata.get("flag", field.name.replace("_", "-"))
        if field.name == "loras":
            argv += [flag, "style.safetensors:0.5", flag, "owner/repo"]
            expected["loras"] = [LoraSpec("style.safetensors", 0.5), LoraSpec("owner/repo", 1.0)]
            continue
        if field.type == "bool":
            argv.append(flag)
            expected[field.name] = True
            continue
        given, wanted = special.get(field.name, (values[field.type], None))
        argv += [flag, given]
        kind = {"int": int, "float": float}.get(field.type.split(" ")[0], str)
        expected[field.name] = wanted if wanted is not None else kind(given)
    settings = _parse(argv)
    assert {name: getattr(settings, name) for name in expected} == expected
    assert len(expected) == len(fields(GenerationSettings)) - 3
    short = _parse(["--model", "m", "--prompt", "p", "--resize-short-edge", "80", "--no-vae-tiling"])
    assert short.resize_short_edge == 80 and short.vae_tiling is False
    assert _parse(["--model", "m", "--prompt", "p", "--hires-scale", "1.5"]).hires_scale == 1.5


def test_help_shows_each_fields_dataclass_default_in_its_group():
    from dataclasses import MISSING, fields

    from t2i_adapter.generation.settings import AdapterSpec, GenerationSettings

    parser = _generate_parser()
    groups = {group.title: group._group_actions for group in parser._action_groups}
    titles = ["what to generate", "adapters", "img2img and inpainting", "hires fix", "sampling", "size"]
    titles += ["machine and memory", "output"]
    text = _help_text()
    assert [text.index(f" {title}:") for title in titles] == sorted(text.index(f" {t}:") for t in titles)
    shown = 0
    for field in fields(GenerationSettings):
        if field.name == "adapters":
            continue
        flag = "--" + field.metadata.get("flag", field.name.replace("_", "-"))
        action = next(action for action in groups[field.metadata["group"]] if flag in action.option_strings)
        assert action.help.startswith(field.metadata["help"])
        if field.default not in (MISSING, None, ""):
            assert action.help.endswith(f"(default: {field.default})"), flag
            shown += 1
    # steps, guidance, seed, images, scheduler, clip vision, dtype, 4 switches; strength, mask blur,
    # full-res switch and padding, hires strength and upscaler
    assert shown == 17
    spec = {field.name: field for field in fields(AdapterSpec)}
    assert f"--adapter-weight W {spec['weight'].metadata['help']} (default: {spec['weight'].default})" in text
    assert f"(default: {spec['start'].default:g}:{spec['end'].default:g})" in text
    assert f"(default: {spec['cond_type'].default})" in text
    assert "given once, it applies to every adapter" in text


def test_a_per_adapter_flag_given_once_applies_to_every_adapter(tmp_path):
    # The README's two-adapter example: --adapter-range given once for two adapters.
    two = ["--model", "m", "--prompt", "a red car", "--adapter", "depth-adapter", "--cond", "photo.png"]
    two += ["--cond-type", "depth", "--adapter-weight", "1.0", "--adapter", "color-adapter"]
    two += ["--cond", "palette.png", "--cond-type", "color", "--adapter-weight", "0.8"]
    once = _parse([*two, "--adapter-range", "0:0.5"]).adapters
    assert [(spec.start, spec.end) for spec in once] == [(0.0, 0.5), (0.0, 0.5)]
    assert [(spec.cond_type, spec.weight) for spec in once] == [("depth", 1.0), ("color", 0.8)]
    paired = _parse([*two, "--adapter-range", "0:1", "--adapter-range", "0.2:0.5"]).adapters
    assert [(spec.start, spec.end) for spec in paired] == [(0.0, 1.0), (0.2, 0.5)]
    same_picture = _parse(
        ["--model", "m", "--prompt", "p", "--adapter", "a", "--adapter", "b"] + ["--cond", "x.png"]
    )
    assert [spec.cond for spec in same_picture.adapters] == [str(Path("x.png").absolute())] * 2


def test_a_per_adapter_flag_given_a_wrong_number_of_times_is_one_line_naming_it(files, tmp_path, capsys):
    args = base_args(files, tmp_path / "out.png") + ["--adapter", str(files / "adapter")]
    args += [
        "--cond",
        str(files / "cond.png"),
        "--adapter",
        str(files / "adapter"),
        "--cond",
        str(files / "cond.png"),
    ]
    for flag, value in [("--adapter-range", "0:0.5"), ("--cond-type", "none"), ("--adapter-weight", "0.5")]:
        assert main([*args, flag, value, flag, value]) == 2  # twice for three adapters
        error = capsys.readouterr().err.strip()
        assert error.startswith(f"error: {flag} given 2 times for 3 --adapter") and "\n" not in error
    assert list(tmp_path.iterdir()) == []


def test_per_adapter_flags_beside_from_png_change_the_recorded_adapters(tmp_path):
    from t2i_adapter.generation.settings import AdapterSpec, GenerationSettings
    from t2i_adapter.io.png import save_png

    recorded = GenerationSettings(
        model="m", prompt="p", seed=5,
        adapters=[AdapterSpec("a", cond="/x/a.png", weight=0.9), AdapterSpec("b", cond="/x/b.png", end=0.5)],
    )  # fmt: skip
    png = save_png(Image.new("RGB", (8, 8)), tmp_path / "made.png", recorded.to_dict())
    settings = _parse(["--from-png", str(png), "--adapter-weight", "0.3", "--seed", "6"])
    assert [(spec.adapter, spec.weight, spec.end) for spec in settings.adapters] == [
        ("a", 0.3, 1.0),
        ("b", 0.3, 0.5),
    ]
    assert settings.seed == 6 and settings.prompt == "p"
    paired = _parse(["--from-png", str(png), "--adapter-range", "0:0.25", "--adapter-range", "0.5:1"])
    assert [(spec.start, spec.end, spec.weight) for spec in paired.adapters] == [
        (0, 0.25, 0.9),
        (0.5, 1, 1.0),
    ]


def _record(files) -> dict:
    """A valid record (what `generate` embeds), to spoil one field at a time."""
    adapter = {"adapter": str(files / "adapter"), "cond": str(files / "cond.png")}
    return GenerationSettings(
        model=str(files / "model"), prompt="a box", adapters=[adapter], steps=2, device="cpu"
    ).to_dict()


HOSTILE_RECORDS = {
    "adapters-not-list": {"adapters": "demo:sketch"},
    "adapters-of-numbers": {"adapters": [1, 2]},
    "adapter-without-name": {"adapters": [{"cond": "x.png"}]},
    "adapter-name-number": {"adapters": [{"adapter": 5}]},
    "model-number": {"model": 123},
    "model-list": {"model": ["a", "b"]},
    "steps-text": {"steps": "abc"},
    "steps-fraction": {"steps": 1.5},
    "steps-null": {"steps": None},
    "steps-huge": {"steps": 1e9},
    "steps-bool": {"steps": True},
    "width-text": {"width": "64"},
    "width-huge": {"width": 100000},
    "size-over-limit": {"width": 8192, "height": 8192, "num_images": 4},
    "seed-2-80": {"seed": 2**80},
    "seed-negative": {"seed": -1},
    "guidance-text": {"guidance_scale": "x"},
    "guidance-nan": {"guidance_scale": float("nan")},
    "weight-text": {"adapters": [{"adapter": "demo:sketch", "weight": "heavy"}]},
    "prompt-number": {"prompt": 123},
    "prompt-list": {"prompt": ["a", "b"]},
    "scheduler-number": {"scheduler": 123},
    "device-meta": {"device": "meta"},
    "loras-not-list": {"loras": {"path": "x"}},
    "max-resolution-huge": {"max_resolution": 10**12},
    "attention-slicing-text": {"attention_slicing": "yes"},
}


@pytest.fixture(scope="module")
def hostile_pngs(files, tmp_path_factory):
    """The hostile corpus: a PNG per bad record, plus JSON nested 200,000 deep."""
    from PIL import PngImagePlugin

    from t2i_adapter.io.png import PARAMETERS_KEY, save_png

    folder = tmp_path_factory.mktemp("hostile")
    for name, change in HOSTILE_RECORDS.items():
        save_png(Image.new("RGB", (8, 8)), folder / f"{name}.png", {**_record(files), **change})
    info = PngImagePlugin.PngInfo()
    deep = "[" * 200_000 + "]" * 200_000
    info.add_itxt(PARAMETERS_KEY, f'{{"model": "demo", "prompt": {deep}}}')
    Image.new("RGB", (8, 8)).save(folder / "deep-json.png", pnginfo=info)
    return folder


@pytest.mark.parametrize("name", [*HOSTILE_RECORDS, "deep-json"])
def test_from_png_hostile_record_is_one_error_line_and_writes_nothing(
    files, hostile_pngs, tmp_path, name, capsys
):
    png = hostile_pngs / f"{name}.png"
    out = tmp_path / "out"
    assert main(["generate", "--from-png", str(png), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {png}: ") and "Traceback" not in captured.err
    assert captured.out == "" and not out.exists() and sorted(tmp_path.iterdir()) == []


def test_settings_check_types_and_ranges_in_one_place(files):
    """The same checks hold for a jobs line or the web UI (both build settings with from_dict)."""
    with pytest.raises(T2IAdapterError, match=r"^steps must be a whole number from 1 to 1000, not 'abc'$"):
        GenerationSettings.from_dict({**_record(files), "steps": "abc"})
    with pytest.raises(T2IAdapterError, match=r"^seed must be a whole number from 0 to 18446744073709551615"):
        GenerationSettings.from_dict({**_record(files), "seed": 2**80})
    with pytest.raises(T2IAdapterError, match="weight must be a number, not 'heavy'"):
        GenerationSettings.from_dict({**_record(files), "adapters": [{"adapter": "a", "weight": "heavy"}]})
    with pytest.raises(T2IAdapterError, match="over the limit of 16777216 pixels"):
        GenerationSettings.from_dict({**_record(files), "width": 4096, "height": 4096, "num_images": 2})
    settings = GenerationSettings.from_dict({**_record(files), "steps": 3.0, "seed": 2**64 - 1})
    assert settings.steps == 3 and isinstance(settings.steps, int) and settings.seed == 2**64 - 1
    assert GenerationSettings.from_dict({**_record(files), "width": 4096, "height": 4096}).width == 4096
