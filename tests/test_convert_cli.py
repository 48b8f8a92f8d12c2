"""`t2i-adapter convert`: both directions, outputs that diffusers and the original layout read, errors."""

from __future__ import annotations

import subprocess
import sys

import torch
from diffusers import T2IAdapter

import original_adapter_reference as ref
from t2i_adapter.interfaces.cli.main import main

CHANNELS = [8, 16, 32, 32]


def test_convert_original_to_diffusers_and_back(tmp_path, capsys):
    sd = ref.random_full(CHANNELS, 2, 64)
    torch.save(sd, tmp_path / "sketch.pth")
    assert (
        main(["convert", str(tmp_path / "sketch.pth"), "--to", "diffusers", "--out", str(tmp_path / "d")])
        == 0
    )
    assert "full adapter" in capsys.readouterr().out
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        ours = T2IAdapter.from_pretrained(tmp_path / "d")(x)
    expected = ref.full_forward(sd, x, 2)
    assert max((a - b).abs().max().item() for a, b in zip(ours, expected, strict=True)) <= 1e-5

    out = tmp_path / "back.safetensors"
    assert (
        main(["convert", str(tmp_path / "d"), "--to", "original", "--out", str(out), "--dtype", "fp16"]) == 0
    )
    from safetensors.torch import load_file

    back = load_file(str(out))
    assert sorted(back) == sorted(sd)
    assert back["conv_in.weight"].dtype == torch.float16
    assert torch.allclose(back["body.2.in_conv.weight"].float(), sd["body.2.in_conv.weight"], atol=1e-3)


def test_convert_errors_are_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "garbage.pth").write_bytes(b"\x00" * 100)
    assert (
        main(["convert", str(tmp_path / "garbage.pth"), "--to", "diffusers", "--out", str(tmp_path / "o")])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "garbage.pth" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()

    torch.save(ref.random_full(CHANNELS, 2, 64), tmp_path / "a.pth")
    (tmp_path / "taken").mkdir()
    assert (
        main(["convert", str(tmp_path / "a.pth"), "--to", "diffusers", "--out", str(tmp_path / "taken")]) == 2
    )
    assert "already exists" in capsys.readouterr().err
    assert (
        main(["convert", str(tmp_path / "a.pth"), "--to", "original", "--out", str(tmp_path / "a.txt")]) == 2
    )
    assert ".safetensors or .pth" in capsys.readouterr().err
    assert not (tmp_path / "a.txt").exists()


def test_overwrite_replaces_only_an_adapter_folder_or_an_empty_one(tmp_path, capsys):
    torch.save(ref.random_full(CHANNELS, 2, 64), tmp_path / "a.pth")

    def convert(out) -> int:
        return main(
            ["convert", str(tmp_path / "a.pth"), "--to", "diffusers", "--out", str(out), "--overwrite"]
        )

    mixed = tmp_path / "mixed"
    assert convert(mixed) == 0 and convert(mixed) == 0  # an adapter's folder is replaced
    (mixed / "notes.txt").write_text("mine")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "config.json").write_text("{}")  # a config.json alone is no adapter
    for folder, named in ((mixed, "notes.txt"), (tmp_path / "photos", "no adapter weights")):
        capsys.readouterr()
        assert convert(folder) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and str(folder) in err and named in err and err.count("\n") == 1
    assert (mixed / "notes.txt").read_text() == "mine" and (mixed / "config.json").is_file()
    assert (tmp_path / "photos" / "config.json").read_text() == "{}"
    (tmp_path / "empty").mkdir()
    assert convert(tmp_path / "empty") == 0
    assert (tmp_path / "empty" / "diffusion_pytorch_model.safetensors").is_file()


def test_console_script_lists_convert():
    result = subprocess.run(
        [sys.executable, "-m", "t2i_adapter.interfaces.cli", "convert", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    assert "--to {diffusers,original}" in result.stdout


def test_convert_takes_the_dtype_names_generate_takes():
    from t2i_adapter.generation.settings import DTYPE_ALIASES, DTYPES
    from t2i_adapter.interfaces.cli.main import build_parser

    parser = build_parser()
    for name in (*DTYPES, *DTYPE_ALIASES):  # bf16 and half were refused by convert before
        args = parser.parse_args(["convert", "a.pth", "--to", "original", "--out", "b.pth", "--dtype", name])
        assert args.dtype == name


def test_convert_demo_adapter_to_original_pth_says_why_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "x.pth"
    assert main(["convert", "demo:color", "--to", "original", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}: not written") and err.count("\n") == 1
    assert ".safetensors" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
