"""`load_adapter`: any T2I-Adapter checkpoint (original `.pth`/`.safetensors`, diffusers folder,
hub id, packaged demo name) -> a ready torch module with `adapter_kind` set.
"""

from __future__ import annotations

import inspect
from os import PathLike
from pathlib import Path

import torch
from torch import nn

from t2i_adapter.adapters import CoAdapterFuser, SpatialAdapterConfig, StyleAdapter, build_spatial_adapter
from t2i_adapter.adapters.kinds import FUSER, SPATIAL_KINDS, STYLE, check_kind
from t2i_adapter.checkpoints.detect import DetectedAdapter, detect_adapter
from t2i_adapter.checkpoints.layout import DIFFUSERS, LayoutError
from t2i_adapter.checkpoints.read import RawCheckpoint, read_checkpoint
from t2i_adapter.errors import InputFileError, ModelMismatchError
from t2i_adapter.hub import HUB_REPO, fetch, locate

# A diffusers folder's config `_class_name` -> what to build: a spatial adapter or one of ours.
_DIFFUSERS_CLASSES = {"T2IAdapter": "spatial", "StyleAdapter": STYLE, "CoAdapterFuser": FUSER}
_TRANSFORMER_CLASSES = {STYLE: StyleAdapter, FUSER: CoAdapterFuser}


def _resolve(name: str) -> Path:
    """The adapter's file or folder on this machine (`hub.locate` decides what the name is); of a
    hub repository only the config and one weights format are downloaded."""
    location = locate(name, what="adapter")
    if location.kind != HUB_REPO:
        return fetch(location, what="adapter")
    folder = fetch(location, what="adapter", allow_patterns=["*.json", "*.safetensors"])
    if not any(folder.glob("*.safetensors")):
        # Older hub repositories only have the pickled `.bin`.
        folder = fetch(location, what="adapter", allow_patterns=["*.json", "*.bin"])
    return folder


def _from_diffusers_config(raw: RawCheckpoint) -> DetectedAdapter | None:
    """Use a diffusers folder's config.json when it names one of our classes."""
    config = raw.config or {}
    builder = _DIFFUSERS_CLASSES.get(config.get("_class_name", ""))
    if builder is None:
        if config.get("_class_name"):
            raise InputFileError(
                raw.path, f"config.json describes a '{config['_class_name']}', not an adapter"
            )
        return None
    if builder == "spatial":
        spatial = SpatialAdapterConfig.from_diffusers(config)
        return DetectedAdapter(spatial.kind, DIFFUSERS, dict(raw.state_dict), spatial)
    cls = _TRANSFORMER_CLASSES[builder]
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {key: value for key, value in config.items() if key in accepted and key != "self"}
    return DetectedAdapter(builder, DIFFUSERS, dict(raw.state_dict), kwargs)


def _build(detected: DetectedAdapter) -> nn.Module:
    if detected.kind in SPATIAL_KINDS:
        return build_spatial_adapter(detected.config)
    return _TRANSFORMER_CLASSES[detected.kind](**detected.config)


def _mismatch(module: nn.Module, state_dict: dict[str, torch.Tensor]) -> str | None:
    """One line naming the missing, unexpected and wrongly shaped keys, or None when all fit."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = sorted(
        f"{key} {tuple(state_dict[key].shape)} vs {tuple(expected[key].shape)}"
        for key in set(expected) & set(state_dict)
        if state_dict[key].shape != expected[key].shape
    )
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            parts.append(f"{label}: {', '.join(items[:3])}{', ...' if len(items) > 3 else ''}")
    return "; ".join(parts) or None


def load_adapter(
    path_or_hub_id: str | PathLike,
    kind: str | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    num_res_blocks: int | None = None,
    num_heads: int | None = None,
) -> nn.Module:
    """Load a T2I-Adapter (full / light / xl / style / fuser) from a file, folder, hub id or demo name.

    The kind and every channel count come from the keys and tensor shapes (a diffusers folder's
    config.json when there is one); `kind=` overrides the detection, `num_res_blocks=` and
    `num_heads=` settle what shapes cannot show in an original-layout file. The module is in
    eval mode, float32 unless `dtype` is given.
    """
    name = str(path_or_hub_id)
    if kind is not None:
        check_kind(kind)
    path = _resolve(name)
    raw = read_checkpoint(path)
    try:
        detected = _from_diffusers_config(raw) if kind is None else None
        if detected is None:
            detected = detect_adapter(
                raw.state_dict,
                kind,
                metadata=raw.metadata,
                num_res_blocks=num_res_blocks,
                num_heads=num_heads,
            )
        # Built on the meta device: random initialisation of a full-size adapter costs more than
        # reading its file, and every weight is replaced by the checkpoint's anyway.
        with torch.device("meta"):
            module = _build(detected)
    except (LayoutError, ModelMismatchError) as error:
        raise InputFileError(path, str(error)) from None
    except (KeyError, ValueError, TypeError) as error:
        wanted = kind or "T2I-Adapter"
        raise InputFileError(
            path, f"weights do not fit a {wanted} adapter ({type(error).__name__}: {error})"
        ) from None
    problem = _mismatch(module, detected.state_dict)
    if problem:
        raise InputFileError(path, f"weights do not fit a {detected.kind} adapter ({problem})")
    module.load_state_dict(detected.state_dict, strict=True, assign=True)
    module.source = name  # where it came from, for PNG metadata and error messages
    # nn.Module.to, not ModelMixin.to: the latter warns about fp32-only modules these adapters lack.
    nn.Module.to(module, device=device, dtype=dtype or torch.float32)
    return module.eval()
