"""Single-file Stable Diffusion checkpoints (the `.safetensors`/`.ckpt` files A1111 and ComfyUI users
share), loaded with no network and an empty Hugging Face cache.

diffusers' `from_single_file` converts the original (LDM) key layout but asks the hub for every
component's config. Here the architecture is read from the keys and shapes, and the configs come
from `single_file_configs/<architecture>/` in this package (each reproduces the diffusers repo named
in `ARCHITECTURES`), the CLIP tokenizer from `single_file_configs/clip_tokenizer/` (made by
`scripts/make_clip_tokenizer.py`). A `config_folder` replaces the shipped configs: a diffusers
model folder without weights (its JSON files, tokenizer folders optional), for models no shipped
folder describes.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from t2i_adapter.checkpoints.read import check_weights_file, read_pickle
from t2i_adapter.errors import InputFileError, UnknownNameError

logger = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
CONFIGS_ROOT = Path(__file__).resolve().parent / "single_file_configs"
TOKENIZER_FOLDER = CONFIGS_ROOT / "clip_tokenizer"
PREDICTION_TYPES = ("epsilon", "v_prediction")

# Key prefixes of the original (LDM / SGM) layout.
UNET = "model.diffusion_model."
VAE = "first_stage_model."
SD1_TEXT = "cond_stage_model.transformer."  # CLIP ViT-L, Hugging Face layout
SD2_TEXT = "cond_stage_model.model."  # OpenCLIP ViT-H, OpenCLIP layout
SDXL_TEXT = "conditioner.embedders.0.transformer."  # CLIP ViT-L
SDXL_TEXT_2 = "conditioner.embedders.1.model."  # OpenCLIP ViT-bigG
SDXL_REFINER_TEXT = "conditioner.embedders.0.model."  # the refiner has only bigG, as embedder 0
# SD2.x 768 models predict v, the 512 base and inpainting models noise; files do not say which.
# The spread of this one bias tells them apart (ComfyUI's long-standing rule, same threshold).
SD2_V_PROBE = UNET + "output_blocks.11.1.transformer_blocks.0.norm1.bias"
SD2_V_PROBE_STD = 0.09
CLIP_END_OF_TEXT = "<|endoftext|>"
OPEN_CLIP_PAD = "!"  # OpenCLIP pads with "!" (id 0) where OpenAI's CLIP repeats the end token


@dataclass(frozen=True)
class Architecture:
    """One model layout with shipped configs: the folder name and the diffusers repo it reproduces."""

    name: str
    label: str
    family: str  # "sd" (SD1.x/2.x) or "sdxl"
    hub_repo: str
    text_prefixes: tuple[str, ...]  # where each text encoder's weights live, in order
    pad_tokens: tuple[str, ...]  # each tokenizer's padding token, in the same order

    @property
    def config_folder(self) -> Path:
        return CONFIGS_ROOT / self.name


def _sd(name: str, label: str, hub_repo: str, text: str, pad: str) -> Architecture:
    return Architecture(name, label, "sd", hub_repo, (text,), (pad,))


def _sdxl(name: str, label: str, hub_repo: str) -> Architecture:
    pads = (CLIP_END_OF_TEXT, OPEN_CLIP_PAD)
    return Architecture(name, label, "sdxl", hub_repo, (SDXL_TEXT, SDXL_TEXT_2), pads)


ARCHITECTURES = {
    arch.name: arch
    for arch in (
        _sd("sd15", "SD1.x", "stable-diffusion-v1-5/stable-diffusion-v1-5", SD1_TEXT, CLIP_END_OF_TEXT),
        _sd(
            "sd15-inpainting",
            "SD1.x inpainting",
            "stable-diffusion-v1-5/stable-diffusion-inpainting",
            SD1_TEXT,
            CLIP_END_OF_TEXT,
        ),
        _sd("sd2-v", "SD2.x 768 (v-prediction)", "stabilityai/stable-diffusion-2-1", SD2_TEXT, OPEN_CLIP_PAD),
        _sd("sd2-base", "SD2.x 512 base", "stabilityai/stable-diffusion-2-1-base", SD2_TEXT, OPEN_CLIP_PAD),
        _sd(
            "sd2-inpainting",
            "SD2.x inpainting",
            "stabilityai/stable-diffusion-2-inpainting",
            SD2_TEXT,
            OPEN_CLIP_PAD,
        ),
        _sdxl("sdxl", "SDXL", "stabilityai/stable-diffusion-xl-base-1.0"),
        _sdxl("sdxl-inpainting", "SDXL inpainting", "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"),
    )
}


# ---------------------------------------------------------------------------------------------
# Reading keys and shapes (never the whole file)
# ---------------------------------------------------------------------------------------------


@dataclass
class CheckpointIndex:
    """A checkpoint's tensor names and shapes, and a way to read one tensor when needed."""

    path: Path
    shapes: dict[str, tuple[int, ...]]
    read: Callable[[str], torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)

    def has_prefix(self, prefix: str) -> bool:
        return any(key.startswith(prefix) for key in self.shapes)


@contextlib.contextmanager
def open_checkpoint_index(path: Path) -> Iterator[CheckpointIndex]:
    """Names and shapes from a safetensors header, or from a `.ckpt` mapped (not read) into memory."""
    path = Path(path)
    if path.is_dir():
        raise InputFileError(path, "a folder, not a single-file checkpoint")
    check_weights_file(path)
    if path.suffix == ".safetensors":
        try:
            handle = safe_open(str(path), framework="pt", device="cpu")
        except Exception as error:  # safetensors raises its own error type for every bad header
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise InputFileError(path, f"not a complete safetensors file ({reason})") from None
        shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
        yield CheckpointIndex(path, shapes, handle.get_tensor, dict(handle.metadata() or {}))
        return

    state_dict = read_pickle(path, mmap=True)
    while isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict):
        raise InputFileError(path, f"holds a {type(state_dict).__name__}, not a dictionary of weights")
    tensors = {k: v for k, v in state_dict.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    yield CheckpointIndex(
        path, {key: tuple(value.shape) for key, value in tensors.items()}, tensors.__getitem__
    )


# ---------------------------------------------------------------------------------------------
# Which architecture, which prediction type
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectedCheckpoint:
    """What a single file holds, and how its noise prediction was decided (for the log)."""

    architecture: Architecture
    prediction_type: str
    prediction_source: str
    zero_terminal_snr: bool = False


def _foreign(keys: Mapping[str, Any]) -> str:
    """Why a file with no `model.diffusion_model.*` keys is not a base model, as precisely as we can say."""
    names = list(keys)
    if any("lora" in key.lower() for key in names[:200]):
        return "a LoRA, not a base model; pass it with --lora"
    if any(key.startswith(("down_blocks.", "time_embedding.")) for key in names):
        return "a diffusers-format UNet file, not a whole model; pass the diffusers model folder instead"
    adapter_markers = ("adapter.", "body.", "conv_in.", "style_embedding", "task_embedding")
    if any(key.startswith(adapter_markers) for key in names):
        return "a T2I-Adapter, not a base model; pass it with --adapter"
    if any(key.startswith(("encoder.down", "decoder.up")) for key in names):
        return "a VAE, not a whole model"
    if any(".joint_blocks." in key or ".double_blocks." in key for key in names):
        return "an SD3/Flux model; only SD1.x, SD2.x and SDXL checkpoints are supported"
    return "not a Stable Diffusion checkpoint (no UNet weights under 'model.diffusion_model.')"


def _family_architecture(index: CheckpointIndex, in_channels: int) -> str:
    inpainting = in_channels == 9
    if index.has_prefix(SDXL_TEXT_2):
        return "sdxl-inpainting" if inpainting else "sdxl"
    if index.has_prefix(SDXL_REFINER_TEXT):
        raise InputFileError(index.path, "an SDXL refiner; T2I-Adapters need an SDXL base model")
    if index.has_prefix(SD2_TEXT):
        return "sd2-inpainting" if inpainting else "sd2"
    if index.has_prefix(SD1_TEXT):
        return "sd15-inpainting" if inpainting else "sd15"
    raise InputFileError(
        index.path,
        "has no text encoder weights ('cond_stage_model.*' or 'conditioner.embedders.*'); "
        "only complete checkpoints (UNet, VAE and text encoder) are supported",
    )


def _prediction_type(index: CheckpointIndex, family_name: str, given: str | None) -> tuple[str, str]:
    if given:
        return given, "given"
    if "v_pred" in index.shapes:  # written by SDXL v-prediction fine-tunes (and read by ComfyUI)
        return "v_prediction", "the file's v_pred key"
    if family_name == "sd2" and SD2_V_PROBE in index.shapes:
        spread = float(index.read(SD2_V_PROBE).float().std(unbiased=False))
        kind = "v_prediction" if spread > SD2_V_PROBE_STD else "epsilon"
        return kind, f"SD2 weight statistics (std {spread:.3f}; override with --prediction-type)"
    return "epsilon", "the architecture's default"


def detect_checkpoint(index: CheckpointIndex, prediction_type: str | None = None) -> DetectedCheckpoint:
    """SD1.x / SD2.x (v or epsilon) / SDXL, plain or inpainting, from keys and shapes alone."""
    if prediction_type is not None and prediction_type not in PREDICTION_TYPES:
        raise UnknownNameError("prediction type", prediction_type, PREDICTION_TYPES)
    if not index.has_prefix(UNET):
        raise InputFileError(index.path, _foreign(index.shapes))
    conv_in = index.shapes.get(UNET + "input_blocks.0.0.weight")
    if conv_in is None or len(conv_in) != 4:
        raise InputFileError(index.path, "UNet weights are incomplete (no input_blocks.0.0.weight)")
    in_channels = conv_in[1]
    if in_channels not in (4, 9):
        raise InputFileError(
            index.path,
            f"its UNet takes {in_channels} input channels; only text-to-image (4) and inpainting (9) "
            "models are supported (not instruct-pix2pix or upscalers)",
        )
    if not index.has_prefix(VAE):
        raise InputFileError(index.path, "has no VAE weights ('first_stage_model.*')")
    if "edm_mean" in index.shapes:
        raise InputFileError(index.path, "a Playground v2.5 (EDM) model, which is not supported")
    name = _family_architecture(index, in_channels)
    kind, source = _prediction_type(index, name, prediction_type)
    if name == "sd2":
        name = "sd2-v" if kind == "v_prediction" else "sd2-base"
    return DetectedCheckpoint(ARCHITECTURES[name], kind, source, zero_terminal_snr="ztsnr" in index.shapes)


def check_config_fits(index: CheckpointIndex, folder: Path, label: str) -> None:
    """The UNet config agrees with the file's shapes, so a wrong guess is a sentence, not a size mismatch."""
    config_path = folder / "unet" / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise InputFileError(config_path, f"cannot read the UNet config ({type(error).__name__})") from None
    conv_in = index.shapes[UNET + "input_blocks.0.0.weight"]  # (block_out_channels[0], in_channels, 3, 3)
    context = next(
        (shape[-1] for key, shape in index.shapes.items() if key.startswith(UNET) and "attn2.to_k" in key),
        None,
    )
    found = {"in_channels": conv_in[1], "block_out_channels[0]": conv_in[0], "cross_attention_dim": context}
    expected = {
        "in_channels": config.get("in_channels"),
        "block_out_channels[0]": (config.get("block_out_channels") or [None])[0],
        "cross_attention_dim": config.get("cross_attention_dim"),
    }
    wrong = [f"{key} {found[key]} (config: {expected[key]})" for key in found if found[key] != expected[key]]
    if wrong:
        raise InputFileError(
            index.path,
            f"does not match the {label} configs in {folder}: {', '.join(wrong)}; pass --model-config "
            "with a diffusers folder describing this model",
        )


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def clip_tokenizer(pad_token: str = CLIP_END_OF_TEXT):
    """The CLIP BPE tokenizer (49,408 tokens, 77 positions) from the shipped vocabulary files."""
    # (diffusers/transformers take seconds to import: only when a model is loaded)
    from transformers import CLIPTokenizer

    return CLIPTokenizer(
        vocab=str(TOKENIZER_FOLDER / "vocab.json"),
        merges=str(TOKENIZER_FOLDER / "merges.txt"),
        pad_token=pad_token,
        model_max_length=77,
    )


def _missing_weights(components: Mapping[str, Any]) -> tuple[str, str, int] | None:
    """(component, first parameter name, count) of weights the file did not provide (left on `meta`)."""
    for name, module in components.items():
        if not isinstance(module, torch.nn.Module):
            continue
        missing = [key for key, value in module.state_dict().items() if value.is_meta]
        if missing:
            return name, missing[0], len(missing)
    return None


def load_single_file(
    path: Path,
    *,
    dtype: torch.dtype = torch.float32,
    config_folder: Path | None = None,
    prediction_type: str | None = None,
) -> dict[str, Any]:
    """The components (unet, vae, text_encoder(s), tokenizer(s), scheduler) of a single-file checkpoint."""
    path = Path(path)
    with open_checkpoint_index(path) as index:
        detected = detect_checkpoint(index, prediction_type)
        architecture = detected.architecture
        folder = Path(config_folder) if config_folder else architecture.config_folder
        if not (folder / "model_index.json").is_file():
            raise InputFileError(folder, "not a model config folder (no model_index.json)")
        check_config_fits(index, folder, architecture.label if config_folder is None else "given")
    logger.info(
        "%s: %s, %s (from %s)",
        path.name,
        architecture.label,
        detected.prediction_type,
        detected.prediction_source,
    )
    # (diffusers/transformers take seconds to import: only when a model is loaded)
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    pipeline_class = StableDiffusionXLPipeline if architecture.family == "sdxl" else StableDiffusionPipeline
    tokenizer_names = ("tokenizer", "tokenizer_2")[: len(architecture.pad_tokens)]
    tokenizers = {
        name: clip_tokenizer(pad)
        for name, pad in zip(tokenizer_names, architecture.pad_tokens, strict=True)
        if not (folder / name).is_dir()
    }
    try:
        pipeline = pipeline_class.from_single_file(
            str(path), config=str(folder), local_files_only=True, torch_dtype=dtype, **tokenizers
        )
    except InputFileError:
        raise
    except Exception as error:  # diffusers' conversion raises many types; all mean "this file does not fit"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputFileError(path, f"cannot load it as {architecture.label}: {reason}") from error
    components = dict(pipeline.components)
    missing = _missing_weights(components)
    if missing is not None:
        name, example, count = missing
        raise InputFileError(
            path, f"incomplete checkpoint: {count} weights of the {name} are missing (e.g. {example})"
        )
    scheduler = components["scheduler"]
    overrides = {"prediction_type": detected.prediction_type}
    if detected.zero_terminal_snr:
        overrides["rescale_betas_zero_snr"] = True
    components["scheduler"] = type(scheduler).from_config(scheduler.config, **overrides)
    return components
