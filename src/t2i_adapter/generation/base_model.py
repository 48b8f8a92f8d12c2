"""The frozen Stable Diffusion parts an adapter works with: UNet, VAE, text encoder(s), scheduler.

One loader for generation, training and evaluation, so SD1.x, SD2.x, SDXL and the packaged demo
model all go through the same code: a diffusers folder, a hub id, or a single-file checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from t2i_adapter.checkpoints.read import read_pickle
from t2i_adapter.errors import (
    InputFileError,
    MissingWeightsError,
    T2IAdapterError,
    UnknownNameError,
    first_line,
)
from t2i_adapter.generation.single_file import PREDICTION_TYPES, SINGLE_FILE_SUFFIXES, load_single_file
from t2i_adapter.generation.vae_loading import load_vae, vae_source
from t2i_adapter.hub import HUB_REPO, PICKLE_SUFFIXES, fetch, hub_failure_reason, locate, quiet_hub

# what diffusers and transformers raise for a model's files they cannot read
LOAD_ERRORS = (OSError, ValueError, json.JSONDecodeError, pickle.UnpicklingError)


def vae_scale_factor(vae_config) -> int:
    """Image pixels per latent pixel: the VAE halves the image once per block after the first."""
    return 2 ** (len(vae_config.block_out_channels) - 1)


@dataclass
class BaseModel:
    """The components of a Stable Diffusion model; `text_encoder_2`/`tokenizer_2` only for SDXL."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    text_encoder_2: Any = None
    tokenizer_2: Any = None
    name: str = ""

    @property
    def is_sdxl(self) -> bool:
        return self.text_encoder_2 is not None

    @property
    def family(self) -> str:
        """`sdxl` or `sd` (SD1.x/2.x and the demo model share one architecture family)."""
        return "sdxl" if self.is_sdxl else "sd"

    @property
    def vae_scale_factor(self) -> int:
        return vae_scale_factor(self.vae.config)

    @property
    def native_resolution(self) -> int:
        """The image side the model was trained at: 512 for SD1.5, 768 for SD2.x-v, 1024 for SDXL."""
        sample_size = self.unet.config.sample_size
        if isinstance(sample_size, (list, tuple)):
            sample_size = max(sample_size)
        return int(sample_size) * self.vae_scale_factor

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def frozen_modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.unet, self.vae, self.text_encoder, self.text_encoder_2) if m is not None]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> BaseModel:
        for module in self.frozen_modules():
            module.to(device=device, dtype=dtype)
        return self


def model_source(name: str) -> str | Path:
    """Where a base model is read from: a local folder or single file (the demo's, a downloaded
    `owner/repo/model.safetensors`), or a hub id left to diffusers, whose own download (through
    the huggingface_hub cache) fetches just the pipeline's files. `hub.locate` decides which."""
    location = locate(name, what="base model")
    if location.kind == HUB_REPO:
        return location.repo_id
    return fetch(location, what="base model")


def _load_components(
    source: str | Path, dtype: torch.dtype, model_config: str | None, prediction_type: str | None
) -> dict[str, Any]:
    # diffusers' pipelines (and transformers with them) take seconds to import: only when a model
    # is loaded, not when `data check` or the CLI parser import this module
    from diffusers import DiffusionPipeline

    if isinstance(source, Path) and source.is_file():
        if source.suffix not in SINGLE_FILE_SUFFIXES:
            raise InputFileError(source, "not a diffusers folder or a .safetensors/.ckpt checkpoint")
        config_folder = Path(model_config).expanduser() if model_config else None
        return load_single_file(
            source, dtype=dtype, config_folder=config_folder, prediction_type=prediction_type
        )
    if model_config:
        raise T2IAdapterError(
            f"--model-config describes a single-file checkpoint; '{source}' is a diffusers model, which has its own"
        )
    if isinstance(source, Path) and not (source / "model_index.json").is_file():
        raise InputFileError(source, "not a diffusers model folder (no model_index.json)")
    extra = {}
    if not isinstance(source, Path) or "safety_checker" in (source / "model_index.json").read_text():
        extra["safety_checker"] = None  # never load (or download) the NSFW classifier
    with warnings.catch_warnings():
        # newer diffusers renamed `torch_dtype` to `dtype`; the old name works in every version
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        return dict(DiffusionPipeline.from_pretrained(str(source), torch_dtype=dtype, **extra).components)


def _refused_pickle(folder: Path) -> InputFileError | None:
    """Why a pickled weights file of a model folder cannot be read safely (None: all can).

    diffusers and transformers unpickle `.bin` files with `weights_only=True`, which refuses (never
    runs) a pickle that calls code, but their error names neither the file nor the reason; this
    reads each pickled file with our own safe reader to say which one it is."""
    for path in sorted(folder.glob("*/*")):
        if path.suffix in PICKLE_SUFFIXES and path.is_file():
            try:
                read_pickle(path, mmap=True)
            except InputFileError as error:
                return error
    return None


def _load_error(source: str | Path, name: str, error: Exception) -> T2IAdapterError | None:
    """One line for a model diffusers could not load: the refused file, the folder, or the hub
    (None: not a problem with the model's files, a bug to show as it is)."""
    reason = first_line(error)
    if isinstance(source, Path):
        refused = _refused_pickle(source)
        if refused is None and not isinstance(error, LOAD_ERRORS):
            return None
        return refused or InputFileError(source, f"cannot load the model: {reason}")
    if not isinstance(error, LOAD_ERRORS):
        return None
    if isinstance(error, pickle.UnpicklingError):
        return T2IAdapterError(
            f"model '{name}': a pickled weights file was refused by the safe loader (it could run code); "
            "use the model's .safetensors files"
        )
    return MissingWeightsError(
        f"could not get model '{name}' from the Hugging Face hub: {hub_failure_reason(error)}; download "
        f"it once with network access (kept in the cache under HF_HOME), or pass a local diffusers folder"
    )


def with_prediction_type(scheduler: Any, prediction_type: str | None) -> Any:
    """The model's scheduler, predicting `prediction_type` (`epsilon` / `v_prediction`) when given."""
    if prediction_type is None or scheduler.config.get("prediction_type") == prediction_type:
        return scheduler
    if prediction_type not in PREDICTION_TYPES:
        raise UnknownNameError("prediction type", prediction_type, PREDICTION_TYPES)
    return type(scheduler).from_config(scheduler.config, prediction_type=prediction_type)


def load_base_model(
    name_or_path: str,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    model_config: str | None = None,
    prediction_type: str | None = None,
    vae: str | None = None,
) -> BaseModel:
    """Load a Stable Diffusion model (hub id, diffusers folder, single file, or `demo`), frozen, in eval mode.

    `model_config` (single files only) replaces the shipped configs chosen by architecture;
    `prediction_type` overrides what the model's scheduler (or the single file's detection) says;
    `vae` (a VAE folder, file or hub id: `vae_loading.py`) replaces the model's VAE.
    """
    own_vae = vae_source(vae) if vae else None  # a missing VAE file fails before the model loads
    source = model_source(name_or_path)
    try:
        with quiet_loading(), quiet_hub():
            components = _load_components(source, dtype, model_config, prediction_type)
    except T2IAdapterError:
        raise
    except Exception as error:  # the safe unpickler under diffusers/transformers fails in many ways
        failure = _load_error(source, name_or_path, error)
        if failure is None:
            raise
        raise failure from None
    if own_vae is not None:
        with quiet_loading(), quiet_hub():
            components["vae"] = load_vae(
                own_vae, like=components["vae"], dtype=dtype, name=vae, model_name=name_or_path
            )
    model = BaseModel(
        unet=components["unet"],
        vae=components["vae"],
        text_encoder=components["text_encoder"],
        tokenizer=components["tokenizer"],
        scheduler=with_prediction_type(components["scheduler"], prediction_type),
        text_encoder_2=components.get("text_encoder_2"),
        tokenizer_2=components.get("tokenizer_2"),
        name=name_or_path,
    )
    for module in model.frozen_modules():
        module.requires_grad_(False)
        module.eval()
    if torch.device(device) != model.device:
        model.to(device=device)
    return model


@contextlib.contextmanager
def quiet_loading():
    """No progress bars, import chatter or loader notes while loading (they would flood the CLI's output)."""
    # (imported here for the same reason as in `_load_components`)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    verbosities = transformers_logging.get_verbosity(), diffusers_logging.get_verbosity()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    # importing diffusers' pipelines makes transformers warn about optional image backends; the
    # single-file and LoRA loaders note unused keys (EMA copies, markers) and dtype casts
    transformers_logging.set_verbosity_error()
    diffusers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            # torch's safe unpickler on a refused .bin: the error we raise says it in one line
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            yield
    finally:
        diffusers_logging.enable_progress_bar()
        transformers_logging.enable_progress_bar()
        transformers_logging.set_verbosity(verbosities[0])
        diffusers_logging.set_verbosity(verbosities[1])
