"""`--vae`: another VAE in place of the base model's (A1111's "SD VAE", ComfyUI's VAELoader).

A diffusers VAE folder and a single file (original/LDM key layout, `.safetensors` or a `.ckpt`
read without running code) both replace the base model's VAE: the picture changes, and equals
the one from a model folder whose `vae/` was replaced by hand. The VAE's own config decides its
precision (the fp16-fix VAE's `force_upcast: false`); it is recorded in the PNG, used by
training and its latent cache, and a VAE that does not fit the model or is no VAE at all is one
line naming it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from ldm_layout import save_ldm_vae, vae_to_ldm
from t2i_adapter.errors import InputFileError, MissingWeightsError, ModelMismatchError, T2IAdapterError
from t2i_adapter.generation.api import ModelCache, generate
from t2i_adapter.generation.base_model import load_base_model
from t2i_adapter.generation.pipeline import T2IAdapterPipeline
from t2i_adapter.generation.settings import AdapterSpec, GenerationSettings
from t2i_adapter.interfaces.cli.main import main as cli
from t2i_adapter.io.png import read_png_parameters
from test_single_file import offline  # noqa: F401 (a fixture: no network, an empty hub cache)
from tiny_models import save_tiny_sd, save_tiny_sdxl, tiny_adapter, tiny_vae


def other_vae(seed: int = 5, **config):
    """A tiny VAE shaped like the tiny models' own, with other weights (or another `config`)."""
    torch.manual_seed(seed)
    vae = tiny_vae()
    if config:
        from diffusers import AutoencoderKL

        values = {key: value for key, value in vae.config.items() if not key.startswith("_")}
        torch.manual_seed(seed)  # (`_use_default_values` would put force_upcast back to its default)
        vae = AutoencoderKL.from_config({**values, **config})
    return vae.eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The tiny SD model, another VAE as a folder and as single files, a model folder whose vae/
    was replaced by hand, an adapter and a condition."""
    root = tmp_path_factory.mktemp("vae-option")
    model = save_tiny_sd(root / "model")
    vae = other_vae()
    vae.save_pretrained(root / "vae-folder")
    by_hand = root / "by-hand"
    shutil.copytree(model, by_hand)
    shutil.rmtree(by_hand / "vae")
    vae.save_pretrained(by_hand / "vae")
    tiny_adapter(seed=1).save_pretrained(root / "adapter")
    picture = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(picture).save(root / "cond.png")
    return {
        "root": root,
        "model": model,
        "vae-folder": root / "vae-folder",
        "vae.safetensors": save_ldm_vae(vae, root / "vae.safetensors"),
        "vae.ckpt": save_ldm_vae(vae, root / "vae.ckpt", prefix=""),
        "by-hand": by_hand,
        "adapter": root / "adapter",
        "cond": root / "cond.png",
    }


def settings(files, **changes) -> GenerationSettings:
    values = {
        "model": str(files["model"]),
        "prompt": "a red cat",
        "adapters": [AdapterSpec(str(files["adapter"]), str(files["cond"]))],
        "steps": 2,
        "max_resolution": 64 * 64,
        "device": "cpu",
    }
    return GenerationSettings(**{**values, **changes})


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=int)


# ---------------------------------------------------------------------------------------------
# The VAE replaces the model's
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vae", ["vae-folder", "vae.safetensors", "vae.ckpt"])
def test_another_vae_replaces_the_models_like_a_vae_folder_replaced_by_hand(files, vae):
    cache = ModelCache(max_base_models=3)
    own = generate(settings(files), cache=cache).images[0]
    swapped = generate(settings(files, vae=str(files[vae])), cache=cache)
    by_hand = generate(settings(files, model=str(files["by-hand"])), cache=cache).images[0]
    assert np.abs(pixels(swapped.images[0]) - pixels(own)).max() > 10  # the VAE decoded it
    assert np.array_equal(pixels(swapped.images[0]), pixels(by_hand))
    assert swapped.settings.vae == str(files[vae])  # recorded for --from-png
    assert cache.loads == 3 + 1  # another VAE is another pipeline (+ the adapter)


def test_single_files_hold_the_same_weights_as_the_folder(files):
    expected = other_vae().state_dict()
    for vae in ("vae-folder", "vae.safetensors", "vae.ckpt"):
        base = load_base_model(str(files["model"]), dtype=torch.bfloat16, vae=str(files[vae]))
        got = base.vae.state_dict()
        assert set(got) == set(expected)
        assert all(torch.equal(got[key], expected[key].to(torch.bfloat16)) for key in expected), vae
        assert not any(p.requires_grad for p in base.vae.parameters()) and not base.vae.training


def test_a_diffusers_layout_single_file_and_a_model_folder_as_vae(files, tmp_path):
    vae = other_vae()
    file = tmp_path / "diffusers-layout.safetensors"
    save_file({key: value.contiguous() for key, value in vae.state_dict().items()}, str(file))
    base = load_base_model(str(files["model"]), vae=str(file))
    assert all(torch.equal(base.vae.state_dict()[k], v) for k, v in vae.state_dict().items())
    # a whole model folder: its vae/ (here the by-hand folder's, i.e. the other VAE)
    base = load_base_model(str(files["model"]), vae=str(files["by-hand"]))
    assert all(torch.equal(base.vae.state_dict()[k], v) for k, v in vae.state_dict().items())


def test_single_files_load_offline_and_hub_vaes_say_how_to_get_them(files, offline):  # noqa: F811
    base = load_base_model(str(files["model"]), vae=str(files["vae.safetensors"]))
    assert torch.equal(base.vae.decoder.conv_in.weight, other_vae().decoder.conv_in.weight)
    for name in ("madebyollin/sdxl-vae-fp16-fix", "stabilityai/sd-vae-ft-mse-original/vae.safetensors"):
        with pytest.raises(MissingWeightsError) as caught:
            load_base_model(str(files["model"]), vae=name)
        message = str(caught.value)
        assert message.startswith(
            f"could not get VAE '{name}' from the Hugging Face hub: not in the local cache"
        )
        assert "\n" not in message


# ---------------------------------------------------------------------------------------------
# Precision: the VAE's own config decides (generation/vae.py)
# ---------------------------------------------------------------------------------------------


def _decoder_dtypes(vae) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    vae.decoder.conv_out.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    return seen


def test_an_fp16_fix_vae_on_sdxl_decodes_in_fp16_where_the_models_own_is_upcast(tmp_path):
    """madebyollin/sdxl-vae-fp16-fix says force_upcast: false: with --vae it runs in fp16. Its
    single file has no config: it gets the model's (force_upcast: true), so it is upcast."""
    model = save_tiny_sdxl(tmp_path / "sdxl")
    fix = other_vae(force_upcast=False)
    fix.save_pretrained(tmp_path / "fp16-fix")
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    for vae, runs_in in ((None, torch.float32), (tmp_path / "fp16-fix", torch.float16)):
        base = load_base_model(str(model), dtype=torch.float16, vae=vae and str(vae))
        assert base.vae.dtype == torch.float16
        seen = _decoder_dtypes(base.vae)
        image = T2IAdapterPipeline(base).decode(latents.half(), output_type="pt")
        assert seen == [runs_in] and torch.isfinite(image).all()
    file = save_ldm_vae(fix, tmp_path / "fp16-fix.safetensors")
    base = load_base_model(str(model), dtype=torch.float16, vae=str(file))
    assert base.vae.config.force_upcast
    seen = _decoder_dtypes(base.vae)
    T2IAdapterPipeline(base).decode(latents.half(), output_type="pt")
    assert seen == [torch.float32]


# ---------------------------------------------------------------------------------------------
# The PNG records it; --from-png uses it
# ---------------------------------------------------------------------------------------------


def test_png_records_the_vae_and_from_png_makes_the_same_picture(files, tmp_path, monkeypatch):
    monkeypatch.chdir(files["root"])  # a relative --vae is recorded absolute
    first, again, own = tmp_path / "first.png", tmp_path / "again.png", tmp_path / "own.png"
    common = ["--prompt", "a red cat", "--steps", "2", "--max-resolution", "4096", "--device", "cpu"]
    model = ["--model", str(files["model"]), "--adapter", str(files["adapter"]), "--cond", str(files["cond"])]
    assert cli(["generate", *model, *common, "--vae", "vae.safetensors", "--out", str(first)]) == 0
    assert read_png_parameters(first)["vae"] == str(files["vae.safetensors"])
    assert cli(["generate", "--from-png", str(first), "--out", str(again)]) == 0
    assert np.array_equal(pixels(Image.open(again)), pixels(Image.open(first)))
    assert cli(["generate", *model, *common, "--out", str(own)]) == 0
    assert read_png_parameters(own).get("vae") is None
    assert not np.array_equal(pixels(Image.open(own)), pixels(Image.open(first)))


# ---------------------------------------------------------------------------------------------
# VAEs that do not fit, files that are no VAE: one line naming them
# ---------------------------------------------------------------------------------------------


def test_vaes_of_other_latents_are_refused_naming_the_file(files, tmp_path):
    flux_like = other_vae(latent_channels=16)
    flux_like.save_pretrained(tmp_path / "flux-vae")
    other_vae(scaling_factor=0.13025).save_pretrained(tmp_path / "sdxl-vae")
    three = {"block_out_channels": (8, 8, 8), "down_block_types": ("DownEncoderBlock2D",) * 3}
    other_vae(**three, up_block_types=("UpDecoderBlock2D",) * 3).save_pretrained(tmp_path / "4x-vae")
    file = save_ldm_vae(flux_like, tmp_path / "flux-vae.safetensors", prefix="")
    for vae, problem in (
        (tmp_path / "flux-vae", "latent channels 16 (the model's VAE: 4)"),
        (file, "latent channels 16 (the model's VAE: 4)"),
        (tmp_path / "sdxl-vae", "scaling factor 0.13025 (the model's VAE: 0.18215)"),
        (tmp_path / "4x-vae", "downscale factor 4 (the model's VAE: 8)"),
    ):
        with pytest.raises(ModelMismatchError) as caught:
            load_base_model(str(files["model"]), vae=str(vae))
        message = str(caught.value)
        assert message.startswith(f"{vae}: this VAE does not fit base model") and problem in message
        assert "\n" not in message


def test_a_config_without_a_scaling_factor_has_diffusers_default(files, tmp_path):
    """stabilityai/sd-vae-ft-mse's config names no scaling factor: diffusers' 0.18215, SD1.x's."""
    other_vae().save_pretrained(tmp_path / "old-config")
    config = json.loads((tmp_path / "old-config" / "config.json").read_text())
    del config["scaling_factor"]
    (tmp_path / "old-config" / "config.json").write_text(json.dumps(config))
    assert (
        load_base_model(str(files["model"]), vae=str(tmp_path / "old-config")).vae.config.scaling_factor
        == 0.18215
    )
    with pytest.raises(ModelMismatchError, match="scaling factor 0.18215 \\(the model's VAE: 0.466"):
        load_base_model("demo", vae=str(tmp_path / "old-config"))


class Payload:
    """Something a pickle can hold besides tensors: the safe loader must refuse it."""


def bad_vaes(files, folder: Path) -> dict[str, str]:
    """Bad --vae values -> what the error line says."""
    folder.mkdir()
    data = files["vae.safetensors"].read_bytes()
    (folder / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (folder / "notes.safetensors").write_text("my favourite prompts\n")
    save_file(
        {"lora_unet_down_blocks_0.lora_down.weight": torch.zeros(4, 8)}, str(folder / "lora.safetensors")
    )
    save_file({"body.0.block1.weight": torch.zeros(4, 4, 3, 3)}, str(folder / "adapter.safetensors"))
    torch.save(
        {"state_dict": {"decoder.conv_in.weight": torch.zeros(2)}, "x": Payload()}, folder / "unsafe.ckpt"
    )
    partial = {
        k: v for k, v in vae_to_ldm(other_vae().state_dict(), other_vae().config).items() if "mid" not in k
    }
    save_file({k: v.contiguous() for k, v in partial.items()}, str(folder / "partial.safetensors"))
    (folder / "empty-folder").mkdir()
    shutil.copytree(files["adapter"], folder / "adapter-folder")
    return {
        "missing.safetensors": "no such file or folder (VAE)",
        "truncated.safetensors": "not a complete safetensors file",
        "notes.safetensors": "not a complete safetensors file",
        "lora.safetensors": "a LoRA, not a VAE; pass it with --lora",
        "adapter.safetensors": "a T2I-Adapter, not a VAE; pass it with --adapter",
        "unsafe.ckpt": "refused: the pickle calls",
        "partial.safetensors": "incomplete VAE",
        "empty-folder": "not a VAE folder (no config.json, nor vae/config.json)",
        "adapter-folder": "a T2IAdapter, not a VAE (AutoencoderKL)",
    }


def test_bad_vae_files_are_one_error_line_and_nothing_is_written(files, tmp_path, capsys):
    out = tmp_path / "out"
    for name, problem in bad_vaes(files, tmp_path / "bad").items():
        path = tmp_path / "bad" / name
        args = [
            "generate",
            "--model",
            str(files["model"]),
            "--prompt",
            "x",
            "--steps",
            "1",
            "--device",
            "cpu",
        ]
        assert cli([*args, "--vae", str(path), "--out", str(out)]) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {path}: ") and problem in err and "\n" not in err, (name, err)
    assert not out.exists()


def test_an_empty_vae_name_is_the_models_own(files):
    assert settings(files, vae="  ").vae is None
    with pytest.raises(T2IAdapterError, match="vae must be text"):
        settings(files, vae=3)
    with pytest.raises(InputFileError, match="no such file or folder"):
        load_base_model(str(files["model"]), vae="./nowhere")


# ---------------------------------------------------------------------------------------------
# Training, its latent cache and `data prepare` encode with it
# ---------------------------------------------------------------------------------------------


def cached_latents(cache_dir: Path) -> tuple[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = json.loads((cache_dir / "index.json").read_text())
    return index["fingerprint"], load_file(str(cache_dir / "chunk-00000.safetensors"))["latent_mean"]


def test_training_encodes_with_the_vae_and_its_latent_cache_is_its_own(files, tmp_path):
    from t2i_adapter.training import train
    from test_data_formats import write_meta
    from test_training import config

    meta = write_meta(tmp_path / "data", count=4)
    cache = tmp_path / "cache"

    def run(model: Path, name: str, cache_dir: Path, **overrides) -> tuple[str, torch.Tensor]:
        train(
            config(
                model,
                meta,
                tmp_path / name,
                max_steps=1,
                cache_latents=True,
                cache_dir=str(cache_dir),
                **overrides,
            )
        )
        return cached_latents(cache_dir)

    with_vae = run(files["model"], "with-vae", cache, vae=str(files["vae.safetensors"]))
    without = run(files["model"], "without", cache)  # same cache folder: another fingerprint, rebuilt
    by_hand = run(files["by-hand"], "by-hand", tmp_path / "cache-by-hand")
    assert with_vae[0] != without[0]
    assert (with_vae[1] - without[1]).abs().max() > 1e-2
    assert torch.equal(with_vae[1], by_hand[1])  # the VAE, as if it were the model's own


def test_prepared_latents_record_the_vae_and_training_checks_it(files, tmp_path, capsys):
    from t2i_adapter.training import train
    from t2i_adapter.training.prepare import PrepareSettings, prepare_dataset
    from test_data_formats import TAG, write_meta
    from test_training import config

    meta = write_meta(tmp_path / "data", count=2)
    prepared = tmp_path / "prepared"
    vae = str(files["vae.safetensors"])
    common = {"cond_type": TAG, "model": str(files["model"]), "resolution": 64, "progress": False}
    prepare_dataset(PrepareSettings(str(meta), str(prepared), vae=vae, **common))
    assert json.loads((prepared / "prepare.json").read_text())["settings"]["vae"] == vae
    with pytest.raises(T2IAdapterError, match=r"made with --vae .*vae\.safetensors, not \(the model's own\)"):
        train(config(files["model"], prepared, tmp_path / "refused", cache_latents=True))
    train(config(files["model"], prepared, tmp_path / "ok", max_steps=1, cache_latents=True, vae=vae))
    args = ["data", "prepare", str(meta), "--out", str(tmp_path / "no-model"), "--vae", vae]
    assert cli(args) == 2
    assert (
        capsys.readouterr().err.strip()
        == "error: --vae needs --model: the VAE encodes latents, which only --model stores"
    )


def test_evaluate_generates_every_picture_with_the_vae(files, tmp_path, monkeypatch):
    from t2i_adapter.evaluation import runner

    seen = []
    original = runner.generate

    def spy(settings, **kwargs):
        result = original(settings, **kwargs)
        seen.append((settings.vae, pixels(result.images[0])))
        return result

    monkeypatch.setattr(runner, "generate", spy)
    monkeypatch.chdir(files["root"])  # the relative --vae is recorded absolute
    args = ["evaluate", "--model", str(files["model"]), "--adapter", str(files["adapter"]), "--cond-type",
            "sketch", "--no-baseline", "--num", "1", "--steps", "2", "--device", "cpu"]  # fmt: skip
    assert cli([*args, "--vae", "vae-folder", "--out", str(tmp_path / "with")]) == 0
    assert cli([*args, "--out", str(tmp_path / "without")]) == 0
    assert [vae for vae, _ in seen] == [str(files["vae-folder"]), None]
    assert np.abs(seen[0][1] - seen[1][1]).max() > 10  # the VAE decoded them
    assert json.loads((tmp_path / "with" / "summary.json").read_text())["settings"]["vae"] == str(
        files["vae-folder"]
    )
