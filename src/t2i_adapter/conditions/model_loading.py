"""Loading the networks behind model-based preprocessors: once per process, from the hub or disk.

Every model-based preprocessor (depth, pose, learned edges, segmentation, CLIP-vision style)
goes through `load_pretrained` (a transformers model + its image processor) or `load_cached`
(anything else, e.g. a plain state dict). Both cache per (source, kind, device, dtype), so a
model is loaded once per process however many images are processed; `free_models()` drops them.

Weights come from a local folder (`--cond-model PATH`, option `model=PATH`) or a hub id
(`hub.locate` decides which) through huggingface_hub, so its cache (`HF_HOME`) and offline mode (`HF_HUB_OFFLINE=1`) apply. A model
that cannot be had is a `MissingWeightsError` naming it and saying how to provide it.

`bounded` / `restore_size` keep the resolution a model sees bounded (`detect_resolution`): a
large photo is shrunk before the network and its condition map is scaled back to the photo size.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from PIL import Image

from t2i_adapter.devices import resolve_device
from t2i_adapter.errors import InputFileError, MissingWeightsError, T2IAdapterError, first_line
from t2i_adapter.hub import HUB_FILE, HUB_REPO, Location, fetch, hub_failure_reason, locate

T = TypeVar("T")

DEFAULT_DETECT_RESOLUTION = 512
MAX_DETECT_RESOLUTION = 4096
# Weights and the small JSON/text files transformers reads; `.bin` only when a repo has no
# safetensors, so a download never fetches the same weights twice.
_HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors"]
_HUB_FALLBACK_PATTERNS = ["*.bin"]
COND_MODEL_HINT = "--cond-model PATH, or the preprocessor option model=PATH"

_cache: dict[tuple[str, ...], Any] = {}
_lock = threading.RLock()


@dataclass(frozen=True)
class PretrainedModel:
    """A transformers model in eval mode with the image processor that prepares its input."""

    model: Any
    processor: Any
    source: str
    device: torch.device
    dtype: torch.dtype


# ---------------------------------------------------------------------------------------------
# Resolution
# ---------------------------------------------------------------------------------------------


def check_detect_resolution(detect_resolution: int) -> int:
    """The detect resolution as an int in [64, MAX_DETECT_RESOLUTION], else a user error."""
    try:
        value = int(detect_resolution)
    except (TypeError, ValueError) as error:
        raise T2IAdapterError(
            f"detect_resolution must be a whole number, not {detect_resolution!r}"
        ) from error
    if not 64 <= value <= MAX_DETECT_RESOLUTION:
        raise T2IAdapterError(
            f"detect_resolution={value} is out of range [64, {MAX_DETECT_RESOLUTION}] (pixels, longer side)"
        )
    return value


def bounded(image: Image.Image, detect_resolution: int) -> Image.Image:
    """`image` shrunk (aspect kept) so its longer side is at most `detect_resolution`; never enlarged."""
    limit = check_detect_resolution(detect_resolution)
    width, height = image.size
    longer = max(width, height)
    if longer <= limit:
        return image
    scale = limit / longer
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def restore_size(
    condition: Image.Image,
    size: tuple[int, int],
    resample: Image.Resampling = Image.Resampling.BILINEAR,
) -> Image.Image:
    """A condition map computed at detect resolution, scaled back to the photo's `size`."""
    if condition.size == tuple(size):
        return condition
    return condition.resize(tuple(size), resample)


# ---------------------------------------------------------------------------------------------
# Finding weights
# ---------------------------------------------------------------------------------------------


def _missing_message(what: str, name: str, reason: str, how: str) -> str:
    return (
        f"could not get the {what} model '{name}' ({reason}); download it once with network access "
        f"(it is kept in the Hugging Face cache under HF_HOME, then HF_HUB_OFFLINE=1 works), or pass "
        f"a local copy ({how})"
    )


def resolve_model_folder(name_or_path: str, *, what: str, how: str = COND_MODEL_HINT) -> Path:
    """A local model folder as it is; a hub id downloaded (weights + configs) through the cache.

    `hub.locate` decides what the name is; `how` says in errors how to pass a local copy.
    """
    location = locate(name_or_path, what=f"{what} model")
    if location.kind == HUB_FILE:
        raise MissingWeightsError(
            f"{name_or_path}: a {what} model is a folder or a hub id owner/name, not one file ({how})"
        )
    if location.kind != HUB_REPO:
        if not location.path.is_dir():
            raise InputFileError(
                location.path, f"a {what} model must be a folder with config.json and weights"
            )
        return location.path
    folder = _fetch(location, what, how, _HUB_PATTERNS)
    if not any(folder.glob("*.safetensors")):
        folder = _fetch(location, what, how, _HUB_PATTERNS + _HUB_FALLBACK_PATTERNS)
    return folder


def resolve_model_file(name_or_path: str, *, what: str, how: str = COND_MODEL_HINT) -> Path:
    """A local weights file as it is; `owner/repo/file.pth` downloaded through the cache."""
    location = locate(name_or_path, what=f"{what} model")
    if location.kind == HUB_REPO:
        raise MissingWeightsError(
            f"{name_or_path}: no such file, and not a hub file of the form owner/repo/file ({what} "
            f"model; pass a local copy with {how})"
        )
    if location.kind != HUB_FILE and not location.path.is_file():
        raise InputFileError(location.path, f"the {what} model must be a weights file, not a folder")
    return _fetch(location, what, how)


def _fetch(location: Location, what: str, how: str, patterns: list[str] | None = None) -> Path:
    try:
        return fetch(location, what=f"{what} model", allow_patterns=patterns)
    except MissingWeightsError as error:
        reason = hub_failure_reason(error.__cause__ or error)
        raise MissingWeightsError(_missing_message(what, location.name, reason, how)) from error


# ---------------------------------------------------------------------------------------------
# The per-process cache
# ---------------------------------------------------------------------------------------------


def load_cached(key: tuple[str, ...], factory: Callable[[], T]) -> T:
    """The object cached under `key`, made once by `factory()` (thread-safe)."""
    with _lock:
        if key not in _cache:
            _cache[key] = factory()
        return _cache[key]


def cached_keys() -> list[tuple[str, ...]]:
    """The keys of the models loaded in this process (for tests and diagnostics)."""
    with _lock:
        return list(_cache)


def free_models() -> int:
    """Drop every cached preprocessor model and return accelerator memory; returns how many."""
    with _lock:
        count = len(_cache)
        _cache.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return count


def release_memory(device: torch.device) -> None:
    """Hand the accelerator's unused cached blocks back after a forward pass (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def load_pretrained(
    name_or_path: str,
    model_class: Any,
    *,
    what: str,
    processor_class: Any = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    how: str = COND_MODEL_HINT,
) -> PretrainedModel:
    """A transformers `model_class` + image processor from a folder or hub id, loaded once per process.

    `how` says in errors how to pass a local copy instead (a flag or option name).
    """
    target = resolve_device(device)
    key = (str(name_or_path), model_class.__name__, str(target), str(dtype))
    return load_cached(
        key, lambda: _load_pretrained(name_or_path, model_class, processor_class, what, target, dtype, how)
    )


def _load_pretrained(
    name_or_path: str,
    model_class: Any,
    processor_class: Any,
    what: str,
    device: torch.device,
    dtype: torch.dtype,
    how: str,
) -> PretrainedModel:
    folder = resolve_model_folder(name_or_path, what=what, how=how)
    try:
        model = model_class.from_pretrained(folder, dtype=dtype)
        processor = load_image_processor(folder, processor_class)
    except T2IAdapterError:
        raise
    except Exception as error:  # missing/corrupt config or weights, wrong architecture: the user's files
        raise InputFileError(
            name_or_path, f"not a usable {what} model for {model_class.__name__} ({first_line(error)})"
        ) from error
    model.eval().requires_grad_(False).to(device)
    return PretrainedModel(
        model=model, processor=processor, source=str(name_or_path), device=device, dtype=dtype
    )


def load_image_processor(folder: str | Path, processor_class: Any = None) -> Any:
    """The image processor saved with a model, on the Pillow backend when torchvision is absent."""
    from transformers import AutoImageProcessor  # seconds to import: only when a model is loaded

    cls = processor_class or AutoImageProcessor
    return cls.from_pretrained(folder, **_backend_kwargs(cls))


def _backend_kwargs(cls: Any) -> dict[str, str]:
    # transformers 5 prefers torchvision-based processors and warns when falling back; asking for
    # the Pillow backend directly keeps CPU-only installs (no torchvision wheel) quiet and equal.
    from transformers import AutoImageProcessor  # seconds to import: only when a model is loaded

    if cls is not AutoImageProcessor:
        return {}
    try:
        import torchvision  # noqa: F401 (optional: only asking whether it is installed)
    except ImportError:
        return {"backend": "pil"}
    return {}
