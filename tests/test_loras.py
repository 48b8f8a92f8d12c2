"""LoRAs through diffusers/peft: kohya files made here, scales, switching without reloading, misfits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from t2i_adapter.errors import InputFileError, ModelMismatchError, T2IAdapterError
from t2i_adapter.generation.api import ModelCache, generate
from t2i_adapter.generation.loras import LoraSpec, apply_loras, loaded_adapters
from test_generation_api import settings_for
from tiny_models import save_tiny_sd, tiny_adapter, tiny_sd_base_model, tiny_sdxl_base_model

UNET_LAYERS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k")
UNET_LAYERS += ("attn2.to_v", "attn2.to_out.0", "ff.net.2")
TEXT_LAYERS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def kohya_lora(base, seed: int, *, rank: int = 4, unet: bool = True, text: bool = True) -> dict:
    """A LoRA for `base` in the kohya/A1111 key format (`lora_unet_<module>` with `_` for `.`)."""
    generator = torch.Generator().manual_seed(seed)
    weights = {}

    def add(key: str, module: torch.nn.Linear) -> None:
        weights[f"{key}.lora_down.weight"] = torch.randn(rank, module.in_features, generator=generator) * 0.3
        weights[f"{key}.lora_up.weight"] = torch.randn(module.out_features, rank, generator=generator) * 0.3
        weights[f"{key}.alpha"] = torch.tensor(float(rank))

    if unet:
        for name, module in base.unet.named_modules():
            if name.endswith(UNET_LAYERS):
                add("lora_unet_" + name.replace(".", "_"), module)
    if text:
        for name, module in base.text_encoder.named_modules():
            if name.endswith(TEXT_LAYERS):
                add("lora_te_text_model_" + name.removeprefix("text_model.").replace(".", "_"), module)
    return weights


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("loras")
    save_tiny_sd(root / "model")
    tiny_adapter(seed=1).save_pretrained(root / "adapter")
    Image.new("RGB", (64, 64), "white").save(root / "cond.png")
    base = tiny_sd_base_model()
    save_file(kohya_lora(base, 1), str(root / "style.safetensors"))
    save_file(kohya_lora(base, 2, unet=False), str(root / "text-only.safetensors"))
    xl = tiny_sdxl_base_model()
    save_file(kohya_lora(xl, 3, text=False), str(root / "xl-unet.safetensors"))
    xl_full = kohya_lora(xl, 4)
    for key, value in kohya_lora(xl, 5, unet=False).items():  # SDXL files carry both text encoders
        xl_full[key.replace("lora_te_", "lora_te2_")] = value
    save_file(xl_full, str(root / "xl.safetensors"))
    return root


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0]).astype(np.int16)


def test_lora_spec_parses_path_and_scale():
    assert LoraSpec.parse("style.safetensors:0.7") == LoraSpec("style.safetensors", 0.7)
    assert LoraSpec.parse("owner/repo/file.safetensors") == LoraSpec("owner/repo/file.safetensors", 1.0)
    assert LoraSpec.parse("owner/repo:-0.5") == LoraSpec("owner/repo", -0.5)
    assert LoraSpec.parse(r"C:\loras\style.safetensors") == LoraSpec(r"C:\loras\style.safetensors", 1.0)


@pytest.mark.slow
def test_scales_switching_and_the_cache(files):
    """Scale 0 is no LoRA, scale 1 changes the image; switching LoRAs never reloads the base model."""
    cache = ModelCache()
    plain = pixels(generate(settings_for(files), cache=cache))
    assert cache.loads == 2  # base model + adapter
    style = str(files / "style.safetensors")
    off = generate(settings_for(files, loras=[LoraSpec(style, 0.0)]), cache=cache)
    assert np.array_equal(pixels(off), plain)
    assert cache.loads == 3  # the LoRA, once
    on = pixels(generate(settings_for(files, loras=[LoraSpec(style, 1.0)]), cache=cache))
    assert np.abs(on - plain).mean() > 2  # out of 255
    text_only = [LoraSpec(str(files / "text-only.safetensors"), 1.0)]
    other = pixels(generate(settings_for(files, loras=text_only), cache=cache))
    assert cache.loads == 4 and np.abs(other - plain).mean() > 2 and np.abs(other - on).mean() > 2
    again = pixels(generate(settings_for(files, loras=[LoraSpec(style, 1.0)]), cache=cache))
    assert np.array_equal(again, on) and cache.loads == 4
    both = [LoraSpec(style, 1.0), *text_only]
    assert not np.array_equal(pixels(generate(settings_for(files, loras=both), cache=cache)), on)
    none = pixels(generate(settings_for(files), cache=cache))
    assert np.array_equal(none, plain) and cache.loads == 4


def test_lora_made_for_another_model_is_one_clear_error(files):
    base = tiny_sd_base_model()
    xl_file = files / "xl.safetensors"
    with pytest.raises(ModelMismatchError, match=r"xl\.safetensors: an SDXL LoRA .*second text encoder"):
        apply_loras(base, [LoraSpec(str(xl_file))])
    with pytest.raises(
        ModelMismatchError, match=r"xl-unet\.safetensors: LoRA does not fit this model.*of \d+ layers"
    ):
        apply_loras(base, [LoraSpec(str(files / "xl-unet.safetensors"))])
    assert loaded_adapters(base) == set()  # nothing half-loaded stays behind
    # the same LoRA fits the model it was made for
    xl = tiny_sdxl_base_model()
    assert apply_loras(xl, [LoraSpec(str(xl_file), 0.5)]) == [xl_file]


def test_files_that_are_not_loras(files, tmp_path):
    base = tiny_sd_base_model()
    adapter = tmp_path / "adapter.safetensors"
    save_file({"conv_in.weight": torch.zeros(4, 4, 3, 3)}, str(adapter))
    with pytest.raises(InputFileError, match=r"adapter\.safetensors: .*LoRA"):
        apply_loras(base, [LoraSpec(str(adapter))])
    nowhere = tmp_path / "missing.safetensors"
    with pytest.raises(T2IAdapterError, match="missing.safetensors: no such file"):
        apply_loras(base, [LoraSpec(str(nowhere))])
    unrelated = tmp_path / "unrelated.safetensors"
    save_file({"lora_unet_no_such_block.lora_down.weight": torch.zeros(4, 8)}, str(unrelated))
    with pytest.raises((InputFileError, ModelMismatchError), match="unrelated.safetensors"):
        apply_loras(base, [LoraSpec(str(unrelated))])
    assert loaded_adapters(base) == set()


@pytest.mark.slow
def test_cli_lora_recorded_and_from_png_reproduces_it(files, tmp_path, capsys, monkeypatch):
    from t2i_adapter.interfaces.cli.main import main
    from t2i_adapter.io.png import read_png_parameters

    monkeypatch.chdir(files)  # a relative LoRA path is recorded absolute
    first, again = tmp_path / "first.png", tmp_path / "again.png"
    common = ["--steps", "2", "--max-resolution", "4096", "--device", "cpu", "--seed", "7"]
    args = [
        "generate",
        "--model",
        "model",
        "--prompt",
        "a red ball",
        "--adapter",
        "adapter",
        "--cond",
        "cond.png",
    ]
    args += [
        "--lora",
        "style.safetensors:0.6",
        "--lora",
        "text-only.safetensors",
        *common,
        "--out",
        str(first),
    ]
    assert main(args) == 0
    recorded = read_png_parameters(first)["loras"]
    assert recorded == [
        {"path": str(files / "style.safetensors"), "scale": 0.6},
        {"path": str(files / "text-only.safetensors"), "scale": 1.0},
    ]
    assert main(["generate", "--from-png", str(first), "--out", str(again)]) == 0
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(again)))
    capsys.readouterr()
    bad = [
        "generate",
        "--from-png",
        str(first),
        "--lora",
        "xl.safetensors",
        "--out",
        str(tmp_path / "bad.png"),
    ]
    assert main(bad) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "xl.safetensors: an SDXL LoRA" in error and "\n" not in error
    assert not (tmp_path / "bad.png").exists()
