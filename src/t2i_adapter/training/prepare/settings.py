"""`PrepareSettings`: everything a `data prepare` run depends on, and the check that a resume matches."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t2i_adapter.errors import T2IAdapterError, UnknownNameError
from t2i_adapter.training.config import DATA_FORMATS
from t2i_adapter.training.data.hf_dataset import HUB_PREFIX

DTYPES = ("float32", "float16", "bfloat16")
# Settings that change nothing in the shards: a resumed run may give them differently.
NOT_RECORDED = ("out", "resume", "progress")


@dataclass
class PrepareSettings:
    """What to read, what to compute, and where to write it."""

    source: str
    out: str
    data_format: str = "auto"
    cond_type: str | None = None
    cond_options: dict[str, Any] = field(default_factory=dict)  # the preprocessor's options
    model: str | None = None  # with a base model: VAE posteriors and text embeddings too
    vae: str | None = None  # another VAE in place of the model's, for the posteriors
    resolution: int = 512
    dtype: str = "float32"
    batch_size: int = 8
    samples_per_shard: int = 1000
    image_column: str = "image"
    condition_column: str = "conditioning_image"
    caption_column: str = "text"
    resume: bool = False
    progress: bool = True

    def validate(self) -> PrepareSettings:
        """Raise a one-line error for an impossible value; local paths become absolute."""
        if self.data_format not in DATA_FORMATS:
            raise UnknownNameError("dataset format", self.data_format, DATA_FORMATS)
        if self.dtype not in DTYPES:
            raise UnknownNameError("dtype", self.dtype, DTYPES)
        if self.resolution <= 0 or self.resolution % 64:
            raise T2IAdapterError(f"--resolution must be a positive multiple of 64, not {self.resolution}")
        for name in ("batch_size", "samples_per_shard"):
            if getattr(self, name) < 1:
                raise T2IAdapterError(
                    f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}"
                )
        if not self.source.startswith(HUB_PREFIX) and "{" not in self.source:
            self.source = str(Path(self.source).expanduser().absolute())
        self.out = str(Path(self.out).expanduser().absolute())
        if self.vae and not self.model:
            raise T2IAdapterError("--vae needs --model: the VAE encodes latents, which only --model stores")
        for name in ("model", "vae"):  # a local model or VAE, however it was spelled
            value = getattr(self, name)
            if value and Path(value).expanduser().exists():
                setattr(self, name, str(Path(value).expanduser().resolve()))
        return self

    def recorded(self) -> dict[str, Any]:
        """The settings written to `prepare.json` (what the shards' bytes depend on)."""
        values = dataclasses.asdict(self)
        for name in NOT_RECORDED:
            values.pop(name)
        if not self.model:  # latents settings mean nothing without a model
            values.update(resolution=None, dtype=None, vae=None)
        return values


def first_difference(recorded: dict[str, Any], current: dict[str, Any]) -> str | None:
    """`name: before -> now` for the first setting that differs, None when they all agree."""
    for name in sorted(set(recorded) | set(current)):
        if recorded.get(name) != current.get(name):
            return f"{name}: {recorded.get(name)!r} then, {current.get(name)!r} now"
    return None
