"""Another VAE in place of the base model's (`--vae`): A1111's "SD VAE" setting, ComfyUI's VAELoader.

`vae_source(name)` resolves the name like any model name (`hub.locate`), before the base model
loads, so a typo fails at once; `load_vae` then reads it, in the base model's dtype:
- a diffusers VAE folder (config.json + weights), a model folder's `vae/`, or a hub repository
  (`stabilityai/sd-vae-ft-mse`, `madebyollin/sdxl-vae-fp16-fix`): its own config, so its own
  scaling factor and `force_upcast` (the precision rule in `vae.py` reads it);
- a single file (`vae-ft-mse-840000-ema-pruned.safetensors`; `.ckpt`/`.pt` read without running
  pickled code) in the original layout (`encoder.down.0.block.0...`, possibly under
  `first_stage_model.`, so a whole checkpoint's VAE too) or in diffusers' layout. A single file
  holds no config: it is built from the base model's VAE config with diffusers' own single-file
  conversion (`AutoencoderKL.from_single_file`, `local_files_only`), so it works offline.
A VAE whose latents differ from the base model's (other latent channels, downscale or scaling
factor: an SD3/Flux 16-channel VAE, an SDXL VAE config on SD1.5) is refused in one line naming it.
"""

from __future__ import annotations

import inspect
import math
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from t2i_adapter.errors import (
    InputFileError,
    MissingWeightsError,
    ModelMismatchError,
    T2IAdapterError,
    first_line,
)
from t2i_adapter.generation.single_file import VAE as CHECKPOINT_VAE_PREFIX
from t2i_adapter.generation.single_file import open_checkpoint_index
from t2i_adapter.hub import HUB_REPO, WEIGHT_SUFFIXES, fetch, hub_failure_reason, locate

VAE_CLASS = "AutoencoderKL"
CONFIG_FILE = "config.json"
# the VAE's own weights (a training checkpoint may also hold its discriminator, `loss.*`)
VAE_PARTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
LATENT_KEYS = ("latent_channels", "block_out_channels", "scaling_factor", "shift_factor")
SCALING_TOLERANCE = 1e-3  # relative: configs write 0.18215 and 0.182150001 alike


def vae_source(name: str) -> str | Path:
    """A local VAE folder or file (a hub file downloaded now), or a hub repository id left to
    diffusers, which fetches only its config and weights."""
    location = locate(name, what="VAE")
    if location.kind == HUB_REPO:
        return location.repo_id
    return fetch(location, what="VAE")


def load_vae(source: str | Path, *, like: Any, dtype: torch.dtype, name: str, model_name: str) -> Any:
    """The VAE at `source` (from `vae_source(name)`) in `dtype`, frozen, checked to fit the base
    model `model_name`, whose VAE is `like`."""
    if isinstance(source, Path) and source.is_file():
        if source.suffix not in WEIGHT_SUFFIXES:
            raise InputFileError(source, "not a VAE folder or weights file (.safetensors, .ckpt, .pt)")
        vae = _single_file_vae(source, like=like, dtype=dtype, model_name=model_name)
    else:
        vae = _pretrained_vae(source, like=like, dtype=dtype, name=name, model_name=model_name)
    vae.requires_grad_(False)
    return vae.eval()


# ---------------------------------------------------------------------------------------------
# Fit: the latents must mean what the base model's UNet was trained on
# ---------------------------------------------------------------------------------------------


def latent_format(config: Mapping[str, Any]) -> dict[str, Any]:
    """What a VAE's latents are: channels, downscale factor, scaling and shift factors (diffusers'
    defaults where a config is silent: `stabilityai/sd-vae-ft-mse`'s names no scaling factor)."""
    from diffusers import AutoencoderKL  # seconds to import: only when a model is loaded

    defaults = inspect.signature(AutoencoderKL.__init__).parameters
    value = {key: config.get(key, defaults[key].default) for key in LATENT_KEYS}
    return {
        "latent channels": value["latent_channels"],
        "downscale factor": 2 ** (len(value["block_out_channels"]) - 1),
        "scaling factor": value["scaling_factor"],
        "shift factor": value["shift_factor"],
    }


def check_vae_fits(
    found: Mapping[str, Any], expected: Mapping[str, Any], where: str, model_name: str
) -> None:
    """`found` (`latent_format` of a VAE config, or what a single file's shapes say) against the
    base model's VAE (`expected`, its `latent_format`): every property `found` names must agree."""
    wrong = [
        f"{label} {have} (the model's VAE: {expected[label]})"
        for label, have in found.items()
        if not _same(have, expected[label])
    ]
    if wrong:
        raise ModelMismatchError(
            f"{where}: this VAE does not fit base model '{model_name}': {', '.join(wrong)}; "
            "use a VAE made for this model family"
        )


def _same(have: Any, want: Any) -> bool:
    if isinstance(have, float) or isinstance(want, float):
        both = have is not None and want is not None
        return both and math.isclose(float(have), float(want), rel_tol=SCALING_TOLERANCE)
    return have == want


# ---------------------------------------------------------------------------------------------
# A diffusers folder or hub repository
# ---------------------------------------------------------------------------------------------


def _subfolder(source: str | Path) -> dict[str, str]:
    """`{}` for a VAE folder, `{"subfolder": "vae"}` for a whole model folder (or the demo's)."""
    if not isinstance(source, Path) or (source / CONFIG_FILE).is_file():
        return {}
    if (source / "vae" / CONFIG_FILE).is_file():
        return {"subfolder": "vae"}
    raise InputFileError(source, f"not a VAE folder (no {CONFIG_FILE}, nor vae/{CONFIG_FILE})")


def _load_failure(source: str | Path, name: str, error: Exception) -> T2IAdapterError:
    if isinstance(source, Path):
        return InputFileError(source, f"cannot load the VAE: {first_line(error)}")
    return MissingWeightsError(
        f"could not get VAE '{name}' from the Hugging Face hub: {hub_failure_reason(error)}; download it "
        "once with network access (kept in the cache under HF_HOME), or pass a local folder or file"
    )


def _pretrained_vae(source: str | Path, *, like: Any, dtype: torch.dtype, name: str, model_name: str) -> Any:
    """A diffusers `AutoencoderKL` folder or hub repository; its config is read (and checked)
    before the weights are read or downloaded."""
    from diffusers import AutoencoderKL  # seconds to import: only when a model is loaded

    where = str(source)
    subfolder = _subfolder(source)
    with warnings.catch_warnings():
        # diffusers passes huggingface_hub a deprecated argument on every config download
        warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*", category=UserWarning)
        try:
            config = AutoencoderKL.load_config(where, **subfolder)
        except Exception as error:  # missing, unreadable, offline: one line
            raise _load_failure(source, name, error) from None
        kind = config.get("_class_name", VAE_CLASS)
        if kind != VAE_CLASS:
            raise ModelMismatchError(f"{where}: a {kind}, not a VAE ({VAE_CLASS})")
        check_vae_fits(latent_format(config), latent_format(like.config), where, model_name)
        try:
            return AutoencoderKL.from_pretrained(where, torch_dtype=dtype, **subfolder)
        except Exception as error:
            raise _load_failure(source, name, error) from None


# ---------------------------------------------------------------------------------------------
# A single file
# ---------------------------------------------------------------------------------------------


def _not_a_vae(keys: list[str]) -> str:
    """Why a weights file holds no VAE, as precisely as the keys say."""
    if any("lora" in key.lower() for key in keys[:200]):
        return "a LoRA, not a VAE; pass it with --lora"
    if any(key.startswith(("adapter.", "body.", "conv_in.")) for key in keys):
        return "a T2I-Adapter, not a VAE; pass it with --adapter"
    if any(key.startswith("model.diffusion_model.") for key in keys):
        return f"a model checkpoint without VAE weights ('{CHECKPOINT_VAE_PREFIX}*')"
    return "not a VAE (no 'encoder.*' and 'decoder.*' weights)"


def _vae_names(keys: list[str]) -> dict[str, str]:
    """The VAE's own tensor names -> their keys in the file: a checkpoint's `first_stage_model.`
    prefix removed, anything else (a UNet, a training checkpoint's discriminator) left out."""
    prefix = CHECKPOINT_VAE_PREFIX if any(key.startswith(CHECKPOINT_VAE_PREFIX) for key in keys) else ""
    names = {key[len(prefix) :]: key for key in keys if key.startswith(prefix)}
    return {name: key for name, key in names.items() if name.startswith(VAE_PARTS)}


def _file_shape(weights: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Latent channels and downscale factor from the shapes, in either key layout."""
    decoder_in = weights["decoder.conv_in.weight"]  # (channels, latent channels, 3, 3)
    block = "encoder.down_blocks." if _diffusers_layout(weights) else "encoder.down."
    blocks = {key[len(block) :].split(".")[0] for key in weights if key.startswith(block)}
    return {"latent channels": decoder_in.shape[1], "downscale factor": 2 ** (len(blocks) - 1)}


def _diffusers_layout(weights: Mapping[str, torch.Tensor]) -> bool:
    return any(key.startswith("encoder.down_blocks.") for key in weights)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The VAE tensors of a single file, under their own names."""
    with open_checkpoint_index(path) as index:  # safetensors, or a pickle read without running code
        names = _vae_names(list(index.shapes))
        if "decoder.conv_in.weight" not in names or not any(n.startswith("encoder.") for n in names):
            raise InputFileError(path, _not_a_vae(list(index.shapes)))
        return {name: index.read(key) for name, key in names.items()}


def _diffusers_names(weights: dict[str, torch.Tensor], config: Mapping[str, Any], path: Path) -> dict:
    """The weights under diffusers' names (original-layout keys converted by diffusers' own
    single-file converter), exactly the tensors an `AutoencoderKL` of `config` has; one line
    naming the file when some are missing."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    try:
        converted = weights if _diffusers_layout(weights) else convert_ldm_vae_checkpoint(weights, config)
    except Exception as error:  # the converter indexes keys it expects: a KeyError for a missing one
        raise InputFileError(
            path, f"incomplete VAE: cannot convert its weights ({first_line(error)})"
        ) from None
    with init_empty_weights():
        names = list(AutoencoderKL.from_config(config).state_dict())
    missing = [name for name in names if name not in converted]
    if missing:
        raise InputFileError(path, f"incomplete VAE: {len(missing)} weights are missing (e.g. {missing[0]})")
    return {name: converted[name] for name in names}


def _single_file_vae(path: Path, *, like: Any, dtype: torch.dtype, model_name: str) -> Any:
    """A single-file VAE, built from the base model's VAE config by diffusers' single-file loader."""
    from diffusers import AutoencoderKL

    weights = _read_weights(path)
    check_vae_fits(_file_shape(weights), latent_format(like.config), str(path), model_name)
    weights = _diffusers_names(weights, like.config, path)
    with tempfile.TemporaryDirectory() as config_folder:
        like.to_json_file(str(Path(config_folder) / CONFIG_FILE))
        try:
            return AutoencoderKL.from_single_file(
                weights, config=config_folder, local_files_only=True, torch_dtype=dtype
            )
        except Exception as error:  # shapes that do not fit the config
            raise InputFileError(path, f"cannot load it as this model's VAE: {first_line(error)}") from None
