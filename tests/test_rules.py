"""The rules that live in one place and are used everywhere: the first line of an error, the device
choice, the step window (and, below, KEY=VALUE options, names of weights, lazy re-exports and
hub time limits)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from t2i_adapter import demo_weights, devices, hub
from t2i_adapter.conditions.options import (
    FALSE_WORDS,
    TRUE_WORDS,
    format_option_text,
    parse_bool,
    parse_option,
    parse_option_text,
    parse_options,
)
from t2i_adapter.devices import resolve_device
from t2i_adapter.errors import InputFileError, T2IAdapterError, UnknownNameError, first_line
from t2i_adapter.generation.settings import AdapterSpec, check_step_window

# ---------------------------------------------------------------- errors.first_line


def test_first_line_of_an_error():
    assert first_line(OSError("  no such file\nTraceback ...\n  more")) == "no such file"
    assert first_line(ValueError("")) == "ValueError"
    assert first_line(KeyError()) == "KeyError"


# ---------------------------------------------------------------- devices.resolve_device


@pytest.mark.parametrize(
    "cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]
)
def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(devices, "mps_available", lambda: mps)
    for auto in (None, "auto", ""):
        assert resolve_device(auto) == torch.device(expected)


def test_a_named_device_that_is_absent_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("cpu:0") == torch.device("cpu:0")  # what accelerate names a CPU process's device
    for name, message in (("cuda", "no CUDA GPU"), ("cuda:1", "no CUDA GPU"), ("mps", "no Apple MPS")):
        with pytest.raises(T2IAdapterError, match=message) as info:
            resolve_device(name)
        assert "\n" not in str(info.value)
    with pytest.raises(UnknownNameError, match="unknown device 'gpu0'; valid: .*cuda:N"):
        resolve_device("gpu0")


def test_a_gpu_index_beyond_the_machine_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(T2IAdapterError, match="'cuda:2' does not exist .*2 CUDA GPU"):
        resolve_device("cuda:2")


# ---------------------------------------------------------------- settings.check_step_window


def test_step_window_rule():
    check_step_window(0.0, 1.0, "x")
    check_step_window(0.2, 0.3, "x")
    for start, end in ((0.5, 0.5), (0.0, 0.0), (1.0, 1.0)):
        with pytest.raises(T2IAdapterError, match="start == end never acts"):
            check_step_window(start, end, "unit 2")
    for start, end in ((0.6, 0.5), (-0.1, 0.5), (0.0, 1.01)):
        with pytest.raises(T2IAdapterError, match=r"^unit 2: step range .* 0 <= start < end <= 1$"):
            check_step_window(start, end, "unit 2")
    assert AdapterSpec("a", start=0, end=0.5).end == 0.5


# ---------------------------------------------------------------- conditions.options (KEY=VALUE)


def test_boolean_words():
    for word in ("true", "Yes", "ON", "1", " on "):
        assert parse_bool(word) is True
    for word in ("false", "No", "OFF", "0"):
        assert parse_bool(word) is False
    for word in ("", "maybe", "2", "y"):
        assert parse_bool(word) is None


def test_key_value_pairs():
    assert parse_option(" detect_resolution = 384 ") == ("detect_resolution", "384")
    assert parse_option("model=a=b") == ("model", "a=b")
    assert parse_options(["level=1", "level=2", "binary=on"]) == {"level": "2", "binary": "on"}
    text = " low_threshold=50,\nhigh_threshold = 150 ,"
    assert parse_option_text(text) == {"low_threshold": "50", "high_threshold": "150"}
    assert parse_option_text(format_option_text({"a": 1, "b": True})) == {"a": "1", "b": "True"}
    assert parse_option_text(None) == {}
    for bad in ("level", "=3", "bad key=1", "1x=2"):
        with pytest.raises(T2IAdapterError, match=f"^--cond-option '{bad}' is not of the form KEY=VALUE$"):
            parse_option(bad, what="--cond-option")


def test_every_reader_of_boolean_text_uses_the_same_words(tmp_path):
    """The registry (preprocessor options) and the training config read the same words."""
    from t2i_adapter.conditions.registry import get_preprocessor
    from t2i_adapter.training.config import TrainConfig

    threshold = get_preprocessor("threshold")
    for word in (*TRUE_WORDS, *FALSE_WORDS, "ON", "Off"):
        expected = parse_bool(word)
        assert threshold.check_options({"invert": word}) == {"invert": expected}
        assert TrainConfig().with_overrides({"random_flip": word}).random_flip is expected
    with pytest.raises(
        T2IAdapterError, match=r"invert='maybe' must be true or false \(yes/no, on/off, 1/0\)"
    ):
        threshold.check_options({"invert": "maybe"})


# ---------------------------------------------------------------- hub.locate (names of weights)


def test_locate_decides_what_a_name_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adapter.pth").write_bytes(b"x")
    (tmp_path / "folder").mkdir()
    local = hub.locate("adapter.pth", what="adapter")
    assert (local.kind, local.path) == (hub.LOCAL, Path("adapter.pth"))
    assert hub.locate(str(tmp_path / "folder"), what="adapter").kind == hub.LOCAL
    repo = hub.locate("TencentARC/t2iadapter_sketch_sd15v2", what="adapter")
    assert (repo.kind, repo.repo_id, repo.filename) == (
        hub.HUB_REPO,
        "TencentARC/t2iadapter_sketch_sd15v2",
        None,
    )
    assert hub.locate("gpt2", what="model").kind == hub.HUB_REPO  # a one-word legacy id
    file = hub.locate("lllyasviel/Annotators/sub/table5_pidinet.pth", what="model")
    assert (file.kind, file.repo_id, file.filename) == (
        hub.HUB_FILE,
        "lllyasviel/Annotators",
        "sub/table5_pidinet.pth",
    )


@pytest.mark.parametrize(
    "name",
    ["./absent", "../absent", "/absent/model", "~/absent", "absent.pth", "runs/absent.safetensors", "a\\b"],
)
def test_a_name_only_a_path_can_be_is_a_missing_file(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputFileError, match=r"no such file or folder \(adapter\)$") as info:
        hub.locate(name, what="adapter")
    assert "\n" not in str(info.value)


def test_a_name_that_is_neither_is_refused_naming_the_forms():
    for name in ("owner/repo/folder", "owner//repo", ""):
        with pytest.raises(T2IAdapterError, match="no such file or folder"):
            hub.locate(name, what="adapter")


def test_demo_names_are_the_packaged_weights(tmp_path, monkeypatch):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "model_index.json").write_text("{}")
    (tmp_path / "adapters" / "depth").mkdir(parents=True)
    (tmp_path / "adapters" / "depth" / "w.safetensors").write_bytes(b"x")
    monkeypatch.setenv(demo_weights.WEIGHTS_ENV, str(tmp_path))
    assert hub.locate("demo", what="base model").path == tmp_path / "base"
    located = hub.locate("demo:depth", what="adapter")
    assert (located.kind, located.path) == (hub.DEMO, tmp_path / "adapters" / "depth")
    assert hub.fetch(located, what="adapter") == located.path
    with pytest.raises(UnknownNameError, match="demo:color, demo:depth, demo:sketch"):
        hub.locate("demo:pose", what="adapter")


def test_every_loader_uses_the_one_decision(tmp_path, monkeypatch):
    """Adapters, base models and preprocessor models say the same thing about the same names."""
    from t2i_adapter.checkpoints.load import load_adapter
    from t2i_adapter.conditions.model_loading import resolve_model_file, resolve_model_folder
    from t2i_adapter.generation.base_model import model_source

    monkeypatch.chdir(tmp_path)
    for load in (
        lambda name: load_adapter(name),
        lambda name: model_source(name),
        lambda name: resolve_model_folder(name, what="depth"),
        lambda name: resolve_model_file(name, what="PiDiNet sketch"),
    ):
        for name in ("./absent", "absent.safetensors"):
            with pytest.raises(InputFileError, match="no such file or folder"):
                load(name)
    assert model_source("owner/sd-model") == "owner/sd-model"  # left to diffusers' own download


# ---------------------------------------------------------------- lazy.lazy_exports (packages' names)

LAZY_PACKAGES = [
    "t2i_adapter",
    "t2i_adapter.adapters",
    "t2i_adapter.checkpoints",
    "t2i_adapter.conditions",
    "t2i_adapter.evaluation",
]


def test_importing_the_packages_and_the_cli_loads_no_heavy_library():
    """The CLI's start-up (its help lists adapter kinds, layouts, conditions) needs none of them."""
    heavy = ("torch", "diffusers", "transformers", "gradio")
    code = (
        "import sys, importlib\n"
        f"for name in {LAZY_PACKAGES + ['t2i_adapter.interfaces.cli.main']!r}: importlib.import_module(name)\n"
        "import t2i_adapter.adapters.kinds, t2i_adapter.checkpoints.layout, t2i_adapter.evaluation.grid\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    src = str(Path(importlib.import_module("t2i_adapter").__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_exported_name_imports_and_unknown_names_are_attribute_errors(package):
    module = importlib.import_module(package)
    assert module.__all__ and len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        getattr(module, name)
        assert name in dir(module)
        exec(f"from {package} import {name}", {})
    with pytest.raises(AttributeError, match=f"^module '{package}' has no attribute 'no_such_name'$"):
        module.no_such_name  # noqa: B018
    assert not hasattr(module, "no_such_name")
