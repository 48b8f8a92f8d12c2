"""Generated pictures kept on disk, keyed by a hash of everything that makes them.

An evaluation stopped half-way, or run again with another metric, finds its pictures here
instead of generating them again. The key covers the generation settings (prompt, seed, steps,
guidance, size, sampler, adapter weight, dtype, number of pictures), the condition maps' pixels,
and the identity of the weights: a local model or adapter by its files' sizes and modification
times, so retraining into the same folder regenerates; a hub id by its name. The device is left
out: a CPU and a GPU give (nearly) the same pictures, and both are fair samples.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from PIL import Image

from t2i_adapter.errors import T2IAdapterError
from t2i_adapter.generation.settings import GenerationSettings
from t2i_adapter.hub import DEMO, LOCAL, locate
from t2i_adapter.io.atomic import atomic_write

# Settings that change how, not what, is computed.
_NOT_IN_KEY = ("device", "attention_slicing", "cpu_offload", "version")
KEY_VERSION = 1


def weights_identity(name: str) -> str:
    """A local file or folder as its path and its files' sizes and times; anything else as its name."""
    path = _local_weights(name)
    if path is None:
        return name
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stats = [f"{p.relative_to(path.parent)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    return f"{path.resolve()}|{'|'.join(stats)}"


def _local_weights(name: str) -> Path | None:
    """The demo's packaged (or rebuilt) folder or an existing local path; None for a hub name."""
    try:
        location = locate(name, what="weights")
    except T2IAdapterError:  # not there: the generation that needs it says so
        return None
    return location.path if location.kind in (DEMO, LOCAL) else None


def picture_key(settings: GenerationSettings, conditions: list[Image.Image]) -> str:
    """The hash naming the pictures these settings make from these condition maps."""
    data = {key: value for key, value in settings.to_dict().items() if key not in _NOT_IN_KEY}
    data["model"] = weights_identity(settings.model)
    vae = data.pop("vae", None)  # absent, not null, without --vae: the keys made before it stay valid
    if vae is not None:
        data["vae"] = weights_identity(vae)
    for spec in data["adapters"]:
        spec["adapter"] = weights_identity(spec["adapter"])
    data["key_version"] = KEY_VERSION
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode("utf-8"))
    for condition in conditions:
        digest.update(f"{condition.mode}{condition.size}".encode())
        digest.update(condition.tobytes())
    return digest.hexdigest()[:32]


class PictureCache:
    """`<folder>/<key[:2]>/<key>-<k>.png`, written atomically, so a killed run leaves whole files only."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.hits = 0
        self.misses = 0

    def _path(self, key: str, index: int) -> Path:
        return self.folder / key[:2] / f"{key}-{index}.png"

    def load(self, key: str, count: int) -> list[Image.Image] | None:
        """The `count` pictures stored under `key`, or None when any is missing or unreadable."""
        pictures = []
        for index in range(count):
            path = self._path(key, index)
            try:
                with Image.open(path) as opened:
                    pictures.append(opened.convert("RGB"))
            except (OSError, ValueError):
                self.misses += 1
                return None
        self.hits += 1
        return pictures

    def save(self, key: str, pictures: list[Image.Image]) -> None:
        for index, picture in enumerate(pictures):
            path = self._path(key, index)
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path, "wb") as handle:
                picture.save(handle, format="PNG")
