"""Preprocessor options in generation (`AdapterSpec.cond_options`, `generate --cond-option/--cond-model`)
and the style adapter end to end from the CLI (`--cond-type style`, alone, with a spatial adapter,
with a CoAdapter fuser)."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from t2i_adapter.conditions.registry import register_condition
from t2i_adapter.errors import T2IAdapterError, UnknownNameError
from t2i_adapter.generation.api import ModelCache, generate
from t2i_adapter.generation.settings import AdapterSpec, GenerationSettings
from t2i_adapter.interfaces.cli.main import main
from t2i_adapter.io.png import read_png_parameters
from tiny_models import TINY_TEXT_DIM, save_tiny_clip_vision, save_tiny_sd, tiny_adapter

PROBE = "options_probe"
CALLS: list[dict] = []


def _probe(image: Image.Image, level: int = 0, model: str | None = None, binary: bool = False) -> Image.Image:
    """A test preprocessor: records the options it got; the map's grey level is `level`."""
    CALLS.append({"level": level, "model": model, "binary": binary})
    return Image.new("RGB", image.size, (level, level, level))


DEVICE_PROBE = "device_probe"
DEVICES: list[str | None] = []


def _device_probe(image: Image.Image, device: str | None = None) -> Image.Image:
    """A test preprocessor with a `device` option, like the model-based ones: records it."""
    DEVICES.append(device)
    return image


with contextlib.suppress(ValueError):  # already registered (the module imported twice)
    register_condition(PROBE, channels=3, description="test: records its options")(_probe)
    register_condition(DEVICE_PROBE, channels=3, description="test: records its device")(_device_probe)


@pytest.fixture(autouse=True)
def _fresh_calls():
    CALLS.clear()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cond-options")
    save_tiny_sd(root / "model")
    tiny_adapter(seed=1).save_pretrained(root / "adapter")
    picture = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(picture).ellipse((8, 8, 56, 56), fill=(200, 40, 40), outline="black", width=3)
    picture.save(root / "cond.png")
    return root


@pytest.fixture(scope="module")
def cache():
    return ModelCache()


def _settings(files, adapters, **changes) -> GenerationSettings:
    values = {
        "model": str(files / "model"),
        "prompt": "a ball",
        "adapters": adapters,
        "steps": 2,
        "width": 64,
        "height": 64,
        "device": "cpu",
    }
    values.update(changes)
    return GenerationSettings(**values)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=float)


# ---------------------------------------------------------------- settings and generate()


def test_cond_options_round_trip_through_to_dict_and_json():
    spec = AdapterSpec("a", "c.png", "depth", cond_options={"model": "x/y", "detect_resolution": 384})
    settings = GenerationSettings(model="m", prompt="p", adapters=[spec, AdapterSpec("b")])
    data = json.loads(json.dumps(settings.to_dict()))
    assert data["adapters"][0]["cond_options"] == {"model": "x/y", "detect_resolution": 384}
    assert data["adapters"][1]["cond_options"] == {}
    again = GenerationSettings.from_dict(data)
    assert again == settings
    assert again.adapters[0].cond_options == {"model": "x/y", "detect_resolution": 384}
    # PNGs written before the field existed still load, with no options
    del data["adapters"][0]["cond_options"]
    assert GenerationSettings.from_dict(data).adapters[0].cond_options == {}


def test_cond_options_must_be_plain_values():
    with pytest.raises(T2IAdapterError, match="KEY=VALUE"):
        AdapterSpec("a", cond_options=["model=x"])
    with pytest.raises(T2IAdapterError, match="not a valid name"):
        AdapterSpec("a", cond_options={"bad key": 1})
    with pytest.raises(T2IAdapterError, match="must be text"):
        AdapterSpec("a", cond_options={"model": ["x"]})


def test_options_reach_the_preprocessor_through_generate(files, cache):
    options = {"level": "200", "model": "some/depth-model", "binary": "true"}
    spec = AdapterSpec(str(files / "adapter"), str(files / "cond.png"), PROBE, cond_options=options)
    result = generate(_settings(files, [spec]), cache=cache)
    assert CALLS == [{"level": 200, "model": "some/depth-model", "binary": True}]
    assert np.asarray(result.conditions[0]).max() == 200  # the map made with level=200
    # recorded with their types, so the PNG says 200, not "200"
    assert result.settings.adapters[0].cond_options == {
        "level": 200,
        "model": "some/depth-model",
        "binary": True,
    }
    plain = generate(
        _settings(files, [AdapterSpec(str(files / "adapter"), str(files / "cond.png"), PROBE)]), cache=cache
    )
    assert CALLS[-1] == {"level": 0, "model": None, "binary": False}
    assert np.abs(_pixels(plain.images[0]) - _pixels(result.images[0])).max() > 0


def test_bad_options_fail_before_any_model_is_loaded(files):
    cache = ModelCache()
    spec = AdapterSpec(str(files / "adapter"), str(files / "cond.png"), PROBE, cond_options={"levle": 3})
    with pytest.raises(
        UnknownNameError, match=f"unknown {PROBE} option 'levle'; valid: binary, level, model"
    ):
        generate(_settings(files, [spec]), cache=cache)
    wrong_type = AdapterSpec(
        str(files / "adapter"), str(files / "cond.png"), PROBE, cond_options={"level": "hi"}
    )
    with pytest.raises(T2IAdapterError, match="level='hi' must be an integer"):
        generate(_settings(files, [wrong_type]), cache=cache)
    style = AdapterSpec(str(files / "adapter"), str(files / "cond.png"), "style", cond_options={"model": "x"})
    with pytest.raises(T2IAdapterError, match="--clip-vision"):
        generate(_settings(files, [style]), cache=cache)
    assert cache.loads == 0 and CALLS == []


# ---------------------------------------------------------------- the generate CLI


def _cli(files, out, *extra: str) -> list[str]:
    return [
        "generate",
        "--model",
        str(files / "model"),
        "--prompt",
        "a ball",
        "--steps",
        "2",
        "--width",
        "64",
        "--height",
        "64",
        "--device",
        "cpu",
        "--out",
        str(out),
        *extra,
    ]


def test_cli_options_belong_to_the_adapter_before_them_and_from_png_reproduces(files, tmp_path, capsys):
    adapter, cond = str(files / "adapter"), str(files / "cond.png")
    out = tmp_path / "options.png"
    args = _cli(
        files,
        out,
        *("--adapter", adapter, "--cond", cond, "--cond-type", PROBE),
        *("--adapter", adapter, "--cond", cond, "--cond-type", PROBE),
        *("--cond-option", "level=90", "--cond-model", "local/folder", "--cond-option", "binary=yes"),
        *("--adapter-weight", "0.5", "--adapter-weight", "0.5"),
    )
    assert main(args) == 0, capsys.readouterr().err
    assert CALLS == [
        {"level": 0, "model": None, "binary": False},  # the first adapter: no options
        {"level": 90, "model": "local/folder", "binary": True},
    ]
    recorded = read_png_parameters(out)["adapters"]
    assert recorded[0]["cond_options"] == {}
    assert recorded[1]["cond_options"] == {"level": 90, "model": "local/folder", "binary": True}

    CALLS.clear()
    again = tmp_path / "again.png"
    assert main(["generate", "--from-png", str(out), "--out", str(again)]) == 0
    assert CALLS[1] == {"level": 90, "model": "local/folder", "binary": True}
    assert np.array_equal(_pixels(Image.open(out)), _pixels(Image.open(again)))


def test_the_generation_device_reaches_the_preprocessor_unless_its_option_says_otherwise(
    files, tmp_path, capsys
):
    DEVICES.clear()
    adapter, cond = str(files / "adapter"), str(files / "cond.png")
    out = tmp_path / "device.png"
    args = _cli(
        files,
        out,
        *("--adapter", adapter, "--cond", cond, "--cond-type", DEVICE_PROBE),
        *("--adapter", adapter, "--cond", cond, "--cond-type", DEVICE_PROBE),
        *("--cond-option", "device=cuda:7"),  # the probe loads no model: any name reaches it
    )
    assert main(args) == 0, capsys.readouterr().err  # `_cli` passes --device cpu
    assert DEVICES == ["cpu", "cuda:7"]
    recorded = read_png_parameters(out)["adapters"]
    # the generation's device is not written into the options (the PNG stays portable)
    assert [spec["cond_options"] for spec in recorded] == [{}, {"device": "cuda:7"}]


def test_cli_later_option_wins_and_cond_model_is_model(files, tmp_path, capsys):
    args = _cli(
        files,
        tmp_path / "x.png",
        *("--adapter", str(files / "adapter"), "--cond", str(files / "cond.png"), "--cond-type", PROBE),
        *("--cond-option", "model=first", "--cond-model", "second", "--cond-option", "level=1"),
        *("--cond-option", "level=2"),
    )
    assert main(args) == 0, capsys.readouterr().err
    assert CALLS == [{"level": 2, "model": "second", "binary": False}]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--cond-option", "nope=1"), f"unknown {PROBE} option 'nope'"),
        (("--cond-option", "level=high"), f"{PROBE} option level='high' must be an integer"),
        (("--cond-option", "level"), "is not of the form KEY=VALUE"),
    ],
)
def test_cli_bad_option_exits_2_with_one_error_line(files, tmp_path, capsys, extra, message):
    out = tmp_path / "bad.png"
    args = _cli(
        files,
        out,
        *("--adapter", str(files / "adapter"), "--cond", str(files / "cond.png"), "--cond-type", PROBE),
        *extra,
    )
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error and message in error
    assert not out.exists() and CALLS == []


def test_cli_option_for_a_model_preprocessor_names_its_type(files, tmp_path, capsys):
    # Checked before the depth model would be loaded: no network, no download.
    args = _cli(
        files,
        tmp_path / "bad.png",
        *("--adapter", str(files / "adapter"), "--cond", str(files / "cond.png"), "--cond-type", "depth"),
        *("--cond-option", "detect_res=384"),
    )
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: unknown depth option 'detect_res'") and "detect_resolution" in error


def test_cli_option_before_any_adapter_exits_2(files, tmp_path, capsys):
    args = _cli(files, tmp_path / "bad.png", "--cond-model", "x", "--adapter", str(files / "adapter"))
    args += ["--cond", str(files / "cond.png")]
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert error == "error: --cond-model x: put it after the --adapter whose condition it is for"


def test_cli_help_documents_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--cond-option KEY=VALUE" in text and "--cond-model PATH_OR_ID" in text
    assert "the --adapter before it" in text


# ---------------------------------------------------------------- style adapter from the CLI


@pytest.fixture(scope="module")
def style_files(files):
    """A tiny CLIP vision model, a style adapter, a CoAdapter fuser and a reference photo."""
    import torch

    from t2i_adapter.adapters.fuser import CoAdapterFuser
    from t2i_adapter.adapters.style import StyleAdapter
    from t2i_adapter.checkpoints.save import save_adapter

    torch.manual_seed(0)
    save_tiny_clip_vision(files / "clip")
    style = StyleAdapter(width=16, context_dim=TINY_TEXT_DIM, num_heads=2, num_layers=1, num_tokens=4)
    save_adapter(style, files / "style.safetensors", layout="original")  # a .pth would lose num_heads=2
    fuser = CoAdapterFuser(feature_channels=(32, 64), width=32, num_heads=2, num_layers=1)
    with torch.no_grad():
        for projection in fuser.spatial_ch_projs:
            projection.bias.fill_(0.3)  # a fresh fuser is a plain sum; this one is not
    save_adapter(fuser, files / "fuser")
    photo = Image.new("RGB", (90, 60), (30, 160, 220))
    ImageDraw.Draw(photo).rectangle((20, 10, 70, 50), fill=(250, 200, 30))
    photo.save(files / "photo.png")
    return files


def _run_cli(args: list[str], out, capsys) -> np.ndarray:
    code = main(args)
    assert code == 0, capsys.readouterr().err
    return _pixels(Image.open(out))


def test_style_adapter_alone_from_the_cli(style_files, tmp_path, capsys):
    files = style_files
    style = [
        "--adapter",
        str(files / "style.safetensors"),
        "--cond-type",
        "style",
        "--cond",
        str(files / "photo.png"),
    ]
    clip = ["--clip-vision", str(files / "clip")]
    plain = _run_cli(_cli(files, tmp_path / "plain.png", *clip), tmp_path / "plain.png", capsys)
    styled = _run_cli(
        _cli(files, tmp_path / "a.png", *style, *clip, "--save-cond"), tmp_path / "a.png", capsys
    )
    again = _run_cli(_cli(files, tmp_path / "b.png", *style, *clip), tmp_path / "b.png", capsys)
    assert np.abs(styled - plain).max() > 0  # the style tokens changed the context
    assert np.array_equal(styled, again)  # deterministic
    with Image.open(tmp_path / "a-cond-0.png") as crop:
        assert crop.size == (224, 224)  # the crop CLIP reads
    recorded = read_png_parameters(tmp_path / "a.png")
    assert recorded["adapters"][0]["cond_type"] == "style"
    assert recorded["clip_vision"] == str(files / "clip")
    reproduced = _run_cli(
        ["generate", "--from-png", str(tmp_path / "a.png"), "--out", str(tmp_path / "c.png")],
        tmp_path / "c.png",
        capsys,
    )
    assert np.array_equal(styled, reproduced)


def test_style_adapter_with_a_spatial_adapter_and_a_fuser_from_the_cli(style_files, tmp_path, capsys):
    files = style_files
    spatial = ["--adapter", str(files / "adapter"), "--cond", str(files / "cond.png")]
    style = ["--adapter", str(files / "style.safetensors"), "--cond", str(files / "photo.png")]
    both = [
        *spatial,
        *style,
        "--cond-type",
        "none",
        "--cond-type",
        "style",
        "--clip-vision",
        str(files / "clip"),
    ]
    only_spatial = _run_cli(_cli(files, tmp_path / "s.png", *spatial), tmp_path / "s.png", capsys)
    mixed = _run_cli(_cli(files, tmp_path / "m.png", *both), tmp_path / "m.png", capsys)
    assert np.abs(mixed - only_spatial).max() > 0

    fused_args = [
        *both,
        "--adapter-task",
        "depth",
        "--adapter-task",
        "style",
        "--fuser",
        str(files / "fuser"),
    ]
    fused = _run_cli(_cli(files, tmp_path / "f.png", *fused_args), tmp_path / "f.png", capsys)
    fused_again = _run_cli(_cli(files, tmp_path / "g.png", *fused_args), tmp_path / "g.png", capsys)
    assert np.abs(fused - mixed).max() > 0  # the fuser mixes differently from the plain sum
    assert np.array_equal(fused, fused_again)
    assert read_png_parameters(tmp_path / "f.png")["fuser"] == str(files / "fuser")
