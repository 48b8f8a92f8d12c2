"""`save_adapter` / `convert_adapter`: write an adapter in the diffusers or the original layout.

The diffusers layout is a folder (`config.json` + `diffusion_pytorch_model.safetensors`) that
diffusers' `T2IAdapter.from_pretrained` reads; the original layout is one `.pth` or
`.safetensors` file with TencentARC key names, what ComfyUI and the A1111 extension read. Our
safetensors files also carry the config in their metadata, so they load back exactly. Every
write is atomic: a failure leaves the destination as it was.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from os import PathLike
from pathlib import Path

import torch
from diffusers import T2IAdapter
from safetensors.torch import save_file
from torch import nn

from t2i_adapter.adapters import SpatialAdapterConfig, describe_spatial_adapter
from t2i_adapter.adapters.kinds import SPATIAL_KINDS
from t2i_adapter.checkpoints.detect import META_CONFIG, META_KIND, detect_adapter
from t2i_adapter.checkpoints.layout import LAYOUTS, ORIGINAL, LayoutError, from_module_layout
from t2i_adapter.checkpoints.load import load_adapter
from t2i_adapter.checkpoints.read import DIFFUSERS_WEIGHT_FILES
from t2i_adapter.errors import InputFileError, ModelMismatchError, UnknownNameError
from t2i_adapter.hub import PICKLE_SUFFIXES, SAFETENSORS_SUFFIX
from t2i_adapter.io.atomic import atomic_folder, atomic_path


def _kind_and_config(adapter: nn.Module) -> tuple[str, dict]:
    if isinstance(adapter, T2IAdapter) and not hasattr(adapter, "adapter_kind"):
        describe_spatial_adapter(adapter)  # a plain diffusers adapter made elsewhere
    kind = getattr(adapter, "adapter_kind", None)
    if kind is None or not hasattr(adapter, "config"):
        raise ModelMismatchError(f"cannot save a {type(adapter).__name__}: not an adapter from this package")
    return kind, {key: value for key, value in dict(adapter.config).items() if not key.startswith("_")}


def original_state_dict(adapter: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The adapter's weights under the original TencentARC key names, plus metadata for safetensors."""
    kind, config = _kind_and_config(adapter)
    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in adapter.state_dict().items()}
    converted = from_module_layout(tensors, kind, ORIGINAL, int(config.get("num_res_blocks", 0)))
    metadata = {"format": "pt", META_KIND: kind, META_CONFIG: json.dumps(config)}
    return converted, metadata


def _plain(value: object) -> object:
    """Tuples as lists, so a config read back compares equal to the one written."""
    return json.loads(json.dumps(value))


def _read_back_problem(kind: str, config: dict, state_dict: dict, metadata: dict | None) -> str | None:
    """What reading `state_dict` back (as `load_adapter` does) would get wrong, or None."""
    try:
        detected = detect_adapter(state_dict, metadata=metadata)
    except LayoutError as error:
        return str(error).split("; ")[0]
    if detected.kind != kind:
        return f"it would read back as a {detected.kind} adapter"
    if kind in SPATIAL_KINDS:
        wanted = dataclasses.asdict(SpatialAdapterConfig.from_diffusers(config))
        got = dataclasses.asdict(detected.config)
    else:
        got = dict(detected.config)
        wanted = {key: config.get(key) for key in got}
    wrong = [
        f"{key} {wanted[key]} (read back as {got[key]})"
        for key in got
        if _plain(got[key]) != _plain(wanted[key])
    ]
    return ", ".join(wrong) or None


def _check_destination(dest: Path, overwrite: bool) -> None:
    """Overwrite replaces a file, an empty folder or an adapter's folder, never other files."""
    if not dest.exists():
        return
    if not overwrite:
        raise InputFileError(dest, "already exists (pass overwrite=True / --overwrite to replace it)")
    if not dest.is_dir():
        return
    names = {entry.name for entry in dest.iterdir() if entry.is_file()}
    others = sorted(entry.name for entry in dest.iterdir() if entry.name not in ADAPTER_FOLDER_FILES)
    if others or (names and not names & set(DIFFUSERS_WEIGHT_FILES)):
        listed = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "") or "no adapter weights"
        raise InputFileError(
            dest,
            f"is a folder that does not hold an adapter ({listed}); --overwrite replaces only an "
            "adapter's folder or an empty one",
        )


# What a diffusers adapter folder holds; a folder with anything else is not replaced.
ADAPTER_FOLDER_FILES = frozenset(("config.json", *DIFFUSERS_WEIGHT_FILES))


def _save_original(adapter: nn.Module, dest: Path) -> None:
    suffix = dest.suffix.lower()
    if suffix not in (SAFETENSORS_SUFFIX, *PICKLE_SUFFIXES):
        raise InputFileError(dest, "the original layout is one file: name it .safetensors or .pth")
    if dest.is_dir():
        raise InputFileError(dest, "is a folder; the original layout is one .safetensors or .pth file")
    state_dict, metadata = original_state_dict(adapter)
    kind, config = _kind_and_config(adapter)
    problem = _read_back_problem(kind, config, state_dict, metadata if suffix == SAFETENSORS_SUFFIX else None)
    if problem:
        raise InputFileError(
            dest,
            f"not written: a {suffix} file in the original layout would not load back as this {kind} "
            f"adapter ({problem}); write a .safetensors file (it keeps the config) or --to diffusers",
        )
    with atomic_path(dest) as temp:
        if suffix == SAFETENSORS_SUFFIX:
            save_file(state_dict, str(temp), metadata=metadata)
        else:
            torch.save(state_dict, temp)


def _save_diffusers(adapter: nn.Module, dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise InputFileError(dest, "is a file; the diffusers layout is a folder")
    _kind_and_config(adapter)
    try:
        with atomic_folder(dest) as temp:
            adapter.save_pretrained(temp, safe_serialization=True)
    except OSError as error:
        raise InputFileError(dest, f"cannot write: {error.strerror or error}") from None


def save_adapter(
    adapter: nn.Module,
    dest: str | PathLike,
    layout: str = "diffusers",
    *,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `adapter` to `dest` in the `diffusers` (folder) or `original` (one file) layout."""
    if layout not in LAYOUTS:
        raise UnknownNameError("layout", layout, LAYOUTS)
    dest = Path(dest).expanduser()
    _check_destination(dest, overwrite)
    if dtype is not None:
        adapter = nn.Module.to(copy.deepcopy(adapter), dtype=dtype)
    if getattr(adapter, "adapter_kind", None) in SPATIAL_KINDS or isinstance(adapter, T2IAdapter):
        describe_spatial_adapter(adapter)
    if layout == ORIGINAL:
        _save_original(adapter, dest)
    else:
        _save_diffusers(adapter, dest)
    return dest


def convert_adapter(
    src: str | PathLike,
    dest: str | PathLike,
    to: str,
    *,
    kind: str | None = None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
) -> tuple[Path, nn.Module]:
    """Load any adapter checkpoint and write it in the `to` layout; returns (dest, adapter)."""
    if to not in LAYOUTS:
        raise UnknownNameError("layout", to, LAYOUTS)
    _check_destination(Path(dest).expanduser(), overwrite)
    adapter = load_adapter(src, kind)
    return save_adapter(adapter, dest, to, dtype=dtype, overwrite=overwrite), adapter
