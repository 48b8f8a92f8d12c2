"""Read adapter weights from disk: `.pth`/`.pt`/`.ckpt`/`.bin`, `.safetensors`, diffusers folders.

Pickled files are read with `torch.load(weights_only=True)`: a pickle that would import or call
anything beyond tensors and plain containers is refused, never executed. Wrappers that training
code adds (`{"state_dict": ...}`, `{"adapter": ...}`, `module.` from DataParallel,
`_orig_mod.` from `torch.compile`) are removed here, so later steps see bare weights.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from t2i_adapter.errors import InputFileError, first_line
from t2i_adapter.hub import SAFETENSORS_SUFFIX, WEIGHT_SUFFIXES

# Keys under which training scripts nest the weights; tried in this order.
WRAPPER_KEYS = ("state_dict", "adapter", "model", "module", "params", "model_state_dict")
# Prefixes that say how a model was wrapped, not what it is.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Folder files in the order diffusers itself prefers them.
DIFFUSERS_WEIGHT_FILES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.fp16.bin",
)
_ADAPTER_KEY_MARKERS = ("conv_in.", "body.", "style_embedding", "task_embedding")


@dataclass
class RawCheckpoint:
    """What a checkpoint holds before we interpret it: bare tensors, a diffusers config, metadata."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    config: dict | None = None  # config.json of a diffusers folder
    metadata: dict[str, str] = field(default_factory=dict)  # safetensors header metadata


def _looks_like_adapter(keys) -> bool:
    return any(marker in key for key in keys for marker in _ADAPTER_KEY_MARKERS)


def _unwrap(obj: object) -> object:
    """Descend through `{"state_dict": {...}}`-style wrappers until the weights are reached."""
    for _ in range(4):
        if not isinstance(obj, dict) or _looks_like_adapter(k for k in obj if isinstance(k, str)):
            return obj
        inner = next((obj[key] for key in WRAPPER_KEYS if isinstance(obj.get(key), dict)), None)
        if inner is None:
            return obj
        obj = inner
    return obj


def _strip_wrapper_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def tensors_only(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a (possibly wrapped) state dict, keys without wrapper prefixes."""
    obj = _unwrap(obj)
    if not isinstance(obj, dict):
        raise InputFileError(path, f"holds a {type(obj).__name__}, not a dictionary of weights")
    tensors = {
        _strip_wrapper_prefixes(key): value
        for key, value in obj.items()
        if isinstance(key, str) and isinstance(value, torch.Tensor)
    }
    if not tensors:
        raise InputFileError(path, "holds no weights (no tensors found)")
    return tensors


def read_pickle(path: Path, *, mmap: bool = False) -> object:
    """`torch.load(weights_only=True)` with one clear line for every way it can fail.

    `mmap=True` maps a zip-format file instead of reading it (large base-model checkpoints)."""
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4": the refusal below says it all
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(
                path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path)
            )
    except pickle.UnpicklingError as error:
        message = str(error)
        unsafe = re.search(r"GLOBAL (\S+)", message)  # "Unsupported global: GLOBAL mod.Name ..."
        if unsafe:
            raise InputFileError(
                path,
                f"refused: the pickle calls {unsafe[1]}, which could run code; only plain weights are loaded "
                "(re-save it as .safetensors from a trusted copy)",
            ) from None
        if "Weights only load failed" in message:
            raise InputFileError(
                path,
                "not a plain-weights PyTorch checkpoint (corrupt, or uses pickle features the safe loader refuses)",
            ) from None
        raise InputFileError(path, "not a PyTorch checkpoint (cannot unpickle it)") from None
    except (RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile, OSError) as error:
        detail = (
            "truncated or corrupt"
            if isinstance(error, RuntimeError | EOFError)
            else "not a PyTorch checkpoint"
        )
        raise InputFileError(path, f"cannot read it as a PyTorch checkpoint ({detail})") from None
    except Exception:  # the safe unpickler fails on arbitrary bytes in many ways (IndexError, ...)
        raise InputFileError(path, "not a PyTorch checkpoint (cannot unpickle it)") from None


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except Exception as error:  # safetensors raises its own error types, plus OSError/ValueError
        raise InputFileError(path, f"not a valid safetensors file ({first_line(error)})") from None
    return tensors, metadata


def _read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputFileError(path, f"not a readable JSON config ({type(error).__name__})") from None
    if not isinstance(config, dict):
        raise InputFileError(path, "not a JSON object")
    return config


def _folder_weights(folder: Path) -> Path:
    for name in DIFFUSERS_WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    candidates = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise InputFileError(folder, "folder holds no weights file (.safetensors, .pth, .bin)")
    names = ", ".join(p.name for p in candidates[:4])
    raise InputFileError(folder, f"folder holds several weight files ({names}); pass the one to use")


def check_weights_file(path: Path) -> None:
    """A weights file can be read and is not empty (a cut-off download, a `touch`ed name)."""
    try:
        size = path.stat().st_size
    except OSError as error:
        raise InputFileError(path, f"cannot read: {error.strerror or error}") from None
    if size == 0:
        raise InputFileError(path, "empty file")


def read_checkpoint(path: Path) -> RawCheckpoint:
    """Read a checkpoint file or diffusers folder into bare tensors (+ config and metadata)."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "no such file or folder")
    config = None
    if path.is_dir():
        if (path / "config.json").is_file():
            config = _read_config(path / "config.json")
        weights = _folder_weights(path)
    else:
        weights = path
    check_weights_file(weights)
    if weights.suffix == SAFETENSORS_SUFFIX:
        tensors, metadata = _read_safetensors(weights)
        state_dict = tensors_only(tensors, weights)
    else:
        state_dict, metadata = tensors_only(read_pickle(weights), weights), {}
    return RawCheckpoint(path=path, state_dict=state_dict, config=config, metadata=metadata)
