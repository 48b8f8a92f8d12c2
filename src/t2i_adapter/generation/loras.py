"""LoRAs (Hu et al. 2021: low-rank weight deltas) on the UNet and text encoder(s), through diffusers/peft.

diffusers' `load_lora_weights` reads the kohya/A1111, diffusers and peft formats. Each file is
loaded once per base model, as a peft adapter named after the file, and stays in the model; a
generation picks its LoRAs and scales with `set_adapters` (all off when it has none). So changing
LoRAs or scales between generations never reloads the base model, and the LoRAs live exactly as
long as the (cached) model they were loaded into.

Before anything is loaded, every LoRA layer is matched to a module of the model by name and
shape, so a LoRA made for another model (an SDXL LoRA on SD1.5) is one clear error, not a size
mismatch deep in peft or, worse, a LoRA that silently applies in part.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from t2i_adapter.checkpoints.read import WEIGHT_SUFFIXES, read_checkpoint
from t2i_adapter.errors import InputFileError, ModelMismatchError, T2IAdapterError, first_line
from t2i_adapter.generation.base_model import quiet_loading
from t2i_adapter.generation.settings import LoraSpec
from t2i_adapter.hub import fetch, locate

__all__ = ["LoraSpec", "apply_loras", "check_lora_fits", "lora_file"]

COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
# Raw key prefixes that only SDXL LoRAs have: weights for SDXL's second text encoder.
SDXL_ONLY_PREFIXES = ("lora_te2_", "text_encoder_2.")
# The UNet's cross-attention width tells the model family (attn2.to_k reads the text context).
FAMILY_BY_CONTEXT = {768: "SD1.x", 1024: "SD2.x", 2048: "SDXL"}


# ---------------------------------------------------------------------------------------------
# The diffusers LoRA loader over our components
# ---------------------------------------------------------------------------------------------


def _lora_host(base: Any):
    """diffusers' LoRA mixin of the right family, holding our model's components (what it reads)."""
    # (diffusers/transformers take seconds to import: only when a model is loaded)
    from diffusers.loaders import StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin

    mixin = StableDiffusionXLLoraLoaderMixin if base.is_sdxl else StableDiffusionLoraLoaderMixin

    class LoraHost(mixin):
        hf_device_map = None
        # No components listed: the mixin would take our CPU-offload hooks off and call the
        # pipeline's own offload method to put them back. The hooks stay; LoRA layers move with
        # the module they sit in.
        components: dict = {}

        def __init__(self) -> None:
            self.unet = base.unet
            self.text_encoder = base.text_encoder
            if base.is_sdxl:
                self.text_encoder_2 = base.text_encoder_2

    return LoraHost()


def adapter_name(file: Path) -> str:
    """A stable peft adapter name for a LoRA file (its path, size and modification time)."""
    stat = file.stat()
    identity = f"{file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return "lora_" + hashlib.sha1(identity.encode()).hexdigest()[:16]


def loaded_adapters(base: Any) -> set[str]:
    """Names of the LoRA adapters already in the model's modules."""
    names: set[str] = set()
    for component in COMPONENTS:
        module = getattr(base, component, None)
        names.update(getattr(module, "peft_config", None) or {})
    return names


# ---------------------------------------------------------------------------------------------
# Does the LoRA fit the model?
# ---------------------------------------------------------------------------------------------


def _peft_keys(component: str, state_dict: Mapping[str, torch.Tensor], module: torch.nn.Module) -> dict:
    """One component's LoRA weights in peft naming (`<module>.lora_A.weight`), as diffusers loads them."""
    # (diffusers/transformers take seconds to import: only when a model is loaded)
    from diffusers.utils import (
        convert_state_dict_to_diffusers,
        convert_state_dict_to_peft,
        convert_unet_state_dict_to_peft,
    )

    if component == "unet":
        return (
            dict(state_dict)
            if "lora_A" in next(iter(state_dict))
            else convert_unet_state_dict_to_peft(state_dict)
        )
    converted = convert_state_dict_to_peft(convert_state_dict_to_diffusers(dict(state_dict)))
    if not hasattr(module, "text_model"):  # transformers >= 5.6 flattened CLIPTextModel
        converted = {key.removeprefix("text_model."): value for key, value in converted.items()}
    return converted


def _layer_sizes(module: torch.nn.Module) -> tuple[int, int] | None:
    while hasattr(module, "base_layer"):  # a layer another LoRA already wraps
        module = module.base_layer
    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, torch.nn.Conv2d):
        return module.in_channels, module.out_channels
    return None


def _misfits(
    component: str, weights: Mapping[str, torch.Tensor], model: torch.nn.Module
) -> tuple[int, list[str]]:
    """(LoRA layers in `component`, descriptions of those that match no module of the right size)."""
    modules = dict(model.named_modules())
    layers = sorted({key.rsplit(".lora_A.", 1)[0] for key in weights if ".lora_A." in key})
    misfits = []
    for name in layers:
        down, up = weights.get(f"{name}.lora_A.weight"), weights.get(f"{name}.lora_B.weight")
        sizes = _layer_sizes(modules[name]) if name in modules else None
        if sizes is None:
            misfits.append(f"{component}.{name}: no such layer")
        elif down is None or up is None or (down.shape[1], up.shape[0]) != sizes:
            lora = "?" if down is None or up is None else f"{down.shape[1]}->{up.shape[0]}"
            misfits.append(f"{component}.{name}: LoRA {lora}, model {sizes[0]}->{sizes[1]}")
    return len(layers), misfits


def _made_for(unet_weights: Mapping[str, torch.Tensor]) -> str | None:
    """The family a LoRA was trained on, from the width its cross-attention keys read."""
    for key, value in unet_weights.items():
        if "attn2.to_k.lora_A." in key:
            return FAMILY_BY_CONTEXT.get(value.shape[1])
    return None


def check_lora_fits(
    file: Path, raw: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor], base
) -> None:
    """Every LoRA layer has a module of its name and size in `base`; else one line naming the file."""
    model_family = (
        "SDXL" if base.is_sdxl else FAMILY_BY_CONTEXT.get(base.unet.config.cross_attention_dim, "SD")
    )
    if not base.is_sdxl and any(key.startswith(SDXL_ONLY_PREFIXES) for key in raw):
        raise ModelMismatchError(
            f"{file}: an SDXL LoRA (it has weights for SDXL's second text encoder); the model is {model_family}"
        )
    total, misfits, made_for = 0, [], None
    for component in COMPONENTS:
        prefix = component + "."
        part = {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
        model = getattr(base, component, None)
        if not part or model is None:
            continue
        weights = _peft_keys(component, part, model)
        if component == "unet":
            made_for = _made_for(weights)
        count, wrong = _misfits(component, weights, model)
        total, misfits = total + count, misfits + wrong
    if total == 0:
        raise InputFileError(file, "not a LoRA (it holds no LoRA layers for the UNet or text encoders)")
    if misfits:
        family = f"made for {made_for}, " if made_for and made_for != model_family else ""
        raise ModelMismatchError(
            f"{file}: LoRA does not fit this model ({family}the model is {model_family}): "
            f"{len(misfits)} of {total} layers do not match, e.g. {misfits[0]}"
        )


# ---------------------------------------------------------------------------------------------
# Loading and choosing
# ---------------------------------------------------------------------------------------------


def lora_file(spec: LoraSpec) -> Path:
    """The LoRA's weights file: a local file, one file of a local or downloaded folder, or a hub file."""
    path = fetch(locate(spec.path, what="LoRA"), what="LoRA", allow_patterns=["*.safetensors", "*.bin"])
    if path.is_file():
        return path
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if len(files) != 1:
        found = ", ".join(p.name for p in files[:4]) or "none"
        raise InputFileError(
            path, f"a LoRA folder needs exactly one weights file (found: {found}); pass the file"
        )
    return files[0]


def _load(base: Any, host: Any, file: Path, name: str) -> None:
    raw = read_checkpoint(file).state_dict
    try:
        state_dict, _ = host.lora_state_dict(dict(raw), unet_config=base.unet.config)
    except Exception as error:  # diffusers' format conversion: any failure means "not a LoRA it reads"
        raise InputFileError(file, f"not a LoRA diffusers can read ({_first_line(error)})") from error
    check_lora_fits(file, raw, state_dict, base)
    try:
        host.load_lora_weights(str(file.parent), weight_name=file.name, adapter_name=name)
    except Exception as error:
        if name in loaded_adapters(base):
            host.delete_adapters([name])  # nothing half-loaded stays in the model
        raise InputFileError(file, f"cannot load the LoRA ({_first_line(error)})") from error


def _first_line(error: Exception) -> str:
    """A KeyError from a format converter names the key it missed."""
    return f"missing {error}" if isinstance(error, KeyError) else first_line(error)


def apply_loras(base: Any, specs: Sequence[LoraSpec]) -> list[Path]:
    """Make exactly `specs` active on `base` (a BaseModel or a pipeline holding one), loading each file
    once; returns the files loaded now (those already in the model are reused)."""
    base = getattr(base, "base", base)
    files = [lora_file(spec) for spec in specs]
    names = [adapter_name(file) for file in files]
    if len(set(names)) != len(names):
        raise T2IAdapterError("the same LoRA is given twice; give it once with the summed scale")
    present = loaded_adapters(base)
    if not specs and not present:
        return []
    host = _lora_host(base)
    loaded = []
    for file, name in zip(files, names, strict=True):
        if name not in present:
            with quiet_loading(), warnings.catch_warnings():
                # peft notes that a model holding one adapter gets another: that is the design here
                warnings.filterwarnings("ignore", message=".*peft_config.*", category=UserWarning)
                _load(base, host, file, name)
            loaded.append(file)
    if specs:
        host.enable_lora()
        host.set_adapters(names, [spec.scale for spec in specs])
    else:
        host.disable_lora()
    return loaded
