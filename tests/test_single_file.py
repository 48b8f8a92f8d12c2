"""Single-file checkpoints: tokenizer, shipped configs, architecture detection, offline loading, bad files."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ldm_layout import save_single_file, single_file_state_dict
from t2i_adapter.errors import InputFileError, T2IAdapterError, UnknownNameError
from t2i_adapter.generation import single_file
from t2i_adapter.generation.api import ModelCache, generate
from t2i_adapter.generation.base_model import load_base_model
from t2i_adapter.generation.settings import AdapterSpec, GenerationSettings
from t2i_adapter.generation.single_file import (
    ARCHITECTURES,
    SD2_V_PROBE,
    CheckpointIndex,
    clip_tokenizer,
    detect_checkpoint,
    load_single_file,
)
from tiny_models import save_tiny_sd, save_tiny_sdxl, tiny_adapter, tiny_sd_components, tiny_sdxl_components

# ---------------------------------------------------------------------------------------------
# Tokenizer files
# ---------------------------------------------------------------------------------------------


def test_shipped_tokenizer_reproduces_clip_token_ids():
    tokenizer = clip_tokenizer()
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    padded = tokenizer("a photo", padding="max_length", max_length=77).input_ids
    assert padded[:4] == [49406, 320, 1125, 49407] and set(padded[4:]) == {49407}
    # SD2's and SDXL's second tokenizer pad with "!" (id 0): the only difference
    open_clip = clip_tokenizer(pad_token="!")
    assert open_clip("a photo", padding="max_length", max_length=77).input_ids[4:] == [0] * 73


# ---------------------------------------------------------------------------------------------
# Shipped configs and detection on the real key layouts (shapes only, nothing allocated)
# ---------------------------------------------------------------------------------------------

RELEASED_PARAMETERS = {  # the released models' sizes: the shipped configs must rebuild exactly these
    "sd15": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "sd15-inpainting": {"unet": 859_535_364, "vae": 83_653_863, "text_encoder": 123_060_480},
    "sd2-v": {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840},
    "sd2-base": {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840},
    "sd2-inpainting": {"unet": 865_925_124, "vae": 83_653_863, "text_encoder": 340_387_840},
    "sdxl": {
        "unet": 2_567_463_684,
        "vae": 83_653_863,
        "text_encoder": 123_060_480,
        "text_encoder_2": 694_659_840,
    },
    "sdxl-inpainting": {
        "unet": 2_567_478_084,
        "vae": 83_653_863,
        "text_encoder": 123_060_480,
        "text_encoder_2": 694_659_840,
    },
}


def meta_components(name: str) -> dict:
    """The architecture's components built from the shipped configs on the meta device."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = ARCHITECTURES[name].config_folder

    def config(part: str) -> dict:
        return json.loads((folder / part / "config.json").read_text())

    with torch.device("meta"):
        components = {
            "unet": UNet2DConditionModel.from_config(config("unet")),
            "vae": AutoencoderKL.from_config(config("vae")),
            "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")),
        }
        if (folder / "text_encoder_2").is_dir():
            components["text_encoder_2"] = CLIPTextModelWithProjection(
                CLIPTextConfig.from_pretrained(folder / "text_encoder_2")
            )
    return components


def real_layout_index(name: str, *, probe_std: float = 0.02, extra: dict | None = None) -> CheckpointIndex:
    """Names and shapes of a released checkpoint of `name`, as the file would hold them."""
    components = meta_components(name)
    state = single_file_state_dict(components, open_clip_text=name.startswith("sd2"))
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    if name.startswith("sd2"):  # SD2 files keep OpenCLIP's 24th block, which SD2 skips
        block = "cond_stage_model.model.transformer.resblocks.22."
        shapes.update(
            {key.replace(".22.", ".23."): shape for key, shape in shapes.items() if key.startswith(block)}
        )
    shapes.update(extra or {})
    generator = torch.Generator().manual_seed(0)

    def read(key: str) -> torch.Tensor:
        assert key == SD2_V_PROBE, key  # detection reads no other tensor
        return torch.randn(shapes[key], generator=generator) * probe_std

    return CheckpointIndex(Path(f"{name}.safetensors"), shapes, read)


@pytest.mark.parametrize("name", sorted(RELEASED_PARAMETERS))
def test_shipped_configs_rebuild_the_released_models(name):
    components = meta_components(name)
    sizes = {part: sum(p.numel() for p in module.parameters()) for part, module in components.items()}
    assert sizes == RELEASED_PARAMETERS[name]
    index = real_layout_index(name, probe_std=0.2 if name == "sd2-v" else 0.02)
    detected = detect_checkpoint(index)
    assert detected.architecture.name == name
    expected = "v_prediction" if name == "sd2-v" else "epsilon"
    assert detected.prediction_type == expected
    single_file.check_config_fits(index, detected.architecture.config_folder, name)  # shapes agree


def test_sd2_prediction_type_override_and_sdxl_markers():
    index = real_layout_index("sd2-v", probe_std=0.02)  # statistics say epsilon (the 512 base model)
    assert detect_checkpoint(index).architecture.name == "sd2-base"
    given = detect_checkpoint(index, prediction_type="v_prediction")
    assert (given.architecture.name, given.prediction_type, given.prediction_source) == (
        "sd2-v",
        "v_prediction",
        "given",
    )
    marked = real_layout_index("sdxl", extra={"v_pred": (0,), "ztsnr": (0,)})
    detected = detect_checkpoint(marked)
    assert detected.prediction_type == "v_prediction" and detected.zero_terminal_snr
    with pytest.raises(UnknownNameError, match="v_prediction"):
        detect_checkpoint(index, prediction_type="v-pred")


def test_unsupported_layouts_are_named():
    refiner = real_layout_index("sdxl")
    refiner.shapes = {
        key.replace("conditioner.embedders.1.", "conditioner.embedders.0."): shape
        for key, shape in refiner.shapes.items()
        if not key.startswith("conditioner.embedders.0.")
    }
    with pytest.raises(InputFileError, match="SDXL refiner"):
        detect_checkpoint(refiner)
    pix2pix = real_layout_index("sd15")
    pix2pix.shapes["model.diffusion_model.input_blocks.0.0.weight"] = (320, 8, 3, 3)
    with pytest.raises(InputFileError, match="8 input channels"):
        detect_checkpoint(pix2pix)
    no_vae = real_layout_index("sd15")
    no_vae.shapes = {
        key: shape for key, shape in no_vae.shapes.items() if not key.startswith("first_stage_model.")
    }
    with pytest.raises(InputFileError, match="no VAE"):
        detect_checkpoint(no_vae)
    wide = real_layout_index("sd15")  # an unusual model the shipped SD1.x configs do not describe
    wide.shapes["model.diffusion_model.input_blocks.0.0.weight"] = (384, 4, 3, 3)
    detected = detect_checkpoint(wide)
    with pytest.raises(InputFileError, match=r"block_out_channels\[0\] 384 \(config: 320\).*--model-config"):
        single_file.check_config_fits(wide, detected.architecture.config_folder, detected.architecture.label)


# ---------------------------------------------------------------------------------------------
# Tiny models saved as one file load offline and generate what the diffusers folder generates
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network (any connection attempt fails the test) and an empty Hugging Face cache."""
    import huggingface_hub.constants as hub_constants

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    cache = tmp_path / "empty-hf-home"
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HOME", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache / "hub"))
    yield
    assert attempts == [], f"network access attempted: {attempts[:2]}"
    assert not cache.exists() or not any(cache.rglob("*")), "something was written to the HF cache"


def config_folder(model_folder, dest):
    """A diffusers folder's JSON configs and tokenizer files, without any weights."""
    import shutil

    shutil.copytree(model_folder, dest, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return dest


def settings_for(model, adapter, cond, **changes) -> GenerationSettings:
    values = {
        "model": str(model),
        "prompt": "a red cat",
        "adapters": [AdapterSpec(str(adapter), str(cond))],
        "steps": 2,
        "max_resolution": 64 * 64,
        "device": "cpu",
    }
    return GenerationSettings(**{**values, **changes})


@pytest.mark.slow
@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_tiny_single_file_loads_offline_and_generates_like_the_folder(tmp_path, offline, family):
    sdxl = family == "sdxl"
    components = tiny_sdxl_components(text_dim_2=48) if sdxl else tiny_sd_components()
    folder = save_tiny_sdxl(tmp_path / "model", text_dim_2=48) if sdxl else save_tiny_sd(tmp_path / "model")
    checkpoint = save_single_file(components, tmp_path / "model.safetensors")
    tiny_adapter(sdxl=sdxl, seed=1).save_pretrained(tmp_path / "adapter")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        tmp_path / "c.png"
    )
    settings = settings_for(
        checkpoint,
        tmp_path / "adapter",
        tmp_path / "c.png",
        model_config=str(config_folder(folder, tmp_path / "cfg")),
    )
    from_file = generate(settings, cache=ModelCache())
    from_folder = generate(settings.replace(model=str(folder), model_config=None), cache=ModelCache())
    # Same weights, bit for bit; the float sums may still round one 8-bit level apart on some CPUs
    # (seen: 1 value of 12288 on SDXL). A wrong key mapping changes every pixel by far more.
    diff = np.abs(np.asarray(from_file.images[0], dtype=int) - np.asarray(from_folder.images[0], dtype=int))
    assert diff.max() <= 1 and diff.mean() < 0.01
    assert from_file.settings.model_config == settings.model_config  # recorded for --from-png


def test_ckpt_is_read_without_running_code_and_holds_the_same_weights(tmp_path, offline):
    components = tiny_sd_components()
    folder = save_tiny_sd(tmp_path / "model")
    checkpoint = save_single_file(components, tmp_path / "model.ckpt")
    loaded = load_single_file(checkpoint, config_folder=config_folder(folder, tmp_path / "cfg"))
    for part in ("unet", "vae", "text_encoder"):
        expected, got = components[part].state_dict(), loaded[part].state_dict()
        assert set(got) == set(expected) and all(torch.equal(got[k], expected[k]) for k in expected)
    assert loaded["tokenizer"]("a cat").input_ids == components["tokenizer"]("a cat").input_ids


def test_model_names_that_lead_nowhere(tmp_path):
    folder = save_tiny_sd(tmp_path / "model")
    with pytest.raises(T2IAdapterError, match="--model-config describes a single-file checkpoint"):
        load_base_model(str(folder), model_config=str(folder))
    with pytest.raises(InputFileError, match=r"my_model\.safetensors: no such file"):
        load_base_model("my_model.safetensors")
    with pytest.raises(UnknownNameError, match="prediction type"):
        load_base_model(str(folder), prediction_type="x0")
    assert load_base_model(str(folder), prediction_type="v_prediction").scheduler.config.prediction_type == (
        "v_prediction"
    )


# ---------------------------------------------------------------------------------------------
# Files that are not complete base-model checkpoints: one line naming the file
# ---------------------------------------------------------------------------------------------


class Payload:
    """Something a pickle can hold besides tensors: the safe loader must refuse it."""


def one_line_error(path) -> str:
    with pytest.raises(InputFileError) as caught:
        load_single_file(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    return message


def test_truncated_and_foreign_files_give_one_clear_line(tmp_path):
    from safetensors.torch import save_file

    from t2i_adapter.checkpoints.save import save_adapter

    checkpoint = save_single_file(tiny_sd_components(), tmp_path / "model.safetensors")
    data = checkpoint.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    assert "not a complete safetensors file" in one_line_error(truncated)

    pickled = save_single_file(tiny_sd_components(), tmp_path / "model.ckpt")
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(pickled.read_bytes()[:100_000])
    assert "truncated or corrupt" in one_line_error(cut)

    text = tmp_path / "notes.safetensors"
    text.write_text("these are my favourite prompts\n")
    assert "not a complete safetensors file" in one_line_error(text)

    adapter = save_adapter(tiny_adapter(), tmp_path / "adapter.safetensors", layout="original")
    assert "a T2I-Adapter, not a base model" in one_line_error(adapter)

    lora = tmp_path / "lora.safetensors"
    save_file(
        {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32)}, str(lora)
    )
    assert "a LoRA, not a base model" in one_line_error(lora)

    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(2)}, "callback": Payload()}, unsafe)
    assert "refused: the pickle calls" in one_line_error(unsafe)

    no_text = tmp_path / "unet-and-vae.safetensors"
    state = single_file_state_dict(tiny_sd_components())
    save_file(
        {k: v.contiguous() for k, v in state.items() if not k.startswith("cond_stage_model.")}, str(no_text)
    )
    assert "no text encoder weights" in one_line_error(no_text)


def test_cli_single_file_and_bad_files(tmp_path, capsys):
    from t2i_adapter.interfaces.cli.main import main

    components = tiny_sd_components()
    folder = save_tiny_sd(tmp_path / "model")
    checkpoint = save_single_file(components, tmp_path / "model.safetensors")
    config = config_folder(folder, tmp_path / "cfg")
    Image.new("RGB", (64, 64), "white").save(tmp_path / "c.png")
    tiny_adapter(seed=1).save_pretrained(tmp_path / "adapter")
    args = [
        "generate",
        "--prompt",
        "a cat",
        "--adapter",
        str(tmp_path / "adapter"),
        "--cond",
        str(tmp_path / "c.png"),
    ]
    args += ["--steps", "1", "--max-resolution", "4096", "--device", "cpu"]
    out = tmp_path / "out.png"
    assert main([*args, "--model", str(checkpoint), "--model-config", str(config), "--out", str(out)]) == 0
    capsys.readouterr()
    notes = tmp_path / "notes.safetensors"
    notes.write_text("not weights\n")
    assert main([*args, "--model", str(notes), "--out", str(tmp_path / "bad.png")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: {notes}: not a complete safetensors file") and "\n" not in error
    assert not (tmp_path / "bad.png").exists()
