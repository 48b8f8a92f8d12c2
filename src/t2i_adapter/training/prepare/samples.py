"""The samples of one output shard: read each input, make its condition (and latents), encode its members.

Inputs are taken in batches of `batch_size` consecutive samples of the shard, so a model-based
preprocessor and the VAE see the same batches in every run. A sample that cannot be read, or on
which the preprocessor fails, is skipped with the reason; errors of the set-up itself (missing
weights, a bad option, no GPU) stop the run instead.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors.torch import save as safetensors_bytes

from t2i_adapter.conditions.registry import ConditionSpec
from t2i_adapter.conditions.tensor import resize_condition
from t2i_adapter.errors import InputFileError, T2IAdapterError
from t2i_adapter.generation.base_model import load_base_model
from t2i_adapter.generation.prompts import encode_prompt
from t2i_adapter.training.cache import encode_batch
from t2i_adapter.training.data.example import Example
from t2i_adapter.training.data.prepared import CONDITION_MEMBER, LATENTS_MEMBER
from t2i_adapter.training.data.shards import IMAGE_EXTENSIONS, StreamSource
from t2i_adapter.training.data.source import IndexedSource
from t2i_adapter.training.data.transforms import prepare_example
from t2i_adapter.training.prepare.work import WorkUnit

Skipped = tuple[str, str]  # (where, reason)


@dataclass
class InputSample:
    """A decoded input and the bytes its image member is written from."""

    key: str
    example: Example
    image_bytes: bytes
    image_extension: str


@dataclass
class ConditionMaker:
    """Where conditions come from: the dataset's maps, or a registered preprocessor with options."""

    cond_type: str | None
    preprocessor: ConditionSpec | None = None  # set when conditions are computed
    options: dict[str, Any] = field(default_factory=dict)  # as recorded in each sample's json
    device: str | None = None  # this process's device, for preprocessors that take one

    def record(self) -> dict[str, Any]:
        if self.preprocessor is None:
            return {"from": "dataset", "type": self.cond_type, "options": {}}
        return {"from": "preprocessor", "type": self.preprocessor.name, "options": self.options}

    def make(self, examples: list[Example]) -> list[Image.Image | str]:
        """Each example's condition at its image's size, or the reason it could not be made."""
        if self.preprocessor is None:
            return [_dataset_condition(example) for example in examples]
        options = dict(self.options)
        if self.device is not None and "device" in self.preprocessor.options and "device" not in options:
            options["device"] = self.device
        images = [example.image for example in examples]
        try:
            return list(self.preprocessor.batch(images, **options))  # one model call per batch
        except T2IAdapterError:
            raise  # weights, options, device: the set-up is wrong, not an image
        except Exception:  # some image broke the batch: find which, one at a time
            return [self._one(image, options) for image in images]

    def _one(self, image: Image.Image, options: dict[str, Any]) -> Image.Image | str:
        try:
            return self.preprocessor(image, **options)
        except T2IAdapterError:
            raise
        except Exception as error:  # a model failing on one odd image: skip it, say why
            first_line = (str(error).strip().splitlines() or [""])[0]
            return f"the '{self.preprocessor.name}' preprocessor failed: {type(error).__name__}: {first_line}"


def _dataset_condition(example: Example) -> Image.Image:
    """The dataset's map, resized to its image (as the trainer would before cropping both)."""
    condition = example.condition
    if condition.size != example.image.size:
        condition = resize_condition(condition, example.image.width, example.image.height)
    return condition


class LatentEncoder:
    """VAE posteriors and text embeddings at `resolution` (centre crop), as `--cache-latents` computes them."""

    def __init__(
        self, model: str, *, resolution: int, dtype: torch.dtype, device: str, vae: str | None = None
    ):
        self.base = load_base_model(model, dtype=dtype, device=device, vae=vae)
        self.resolution = resolution

    def encode(self, examples: list[Example]) -> list[bytes]:
        """One `latents.safetensors` member per example (examples carry their conditions)."""
        prepared = [
            prepare_example(
                example,
                resolution=self.resolution,
                condition_channels=1 if example.condition.mode == "L" else 3,
                center_crop=True,
                random_flip=False,
                rng=random.Random(0),  # centre crop, no flip: no random choice is used
            )
            for example in examples
        ]
        pixels = torch.stack([p.pixels for p in prepared])  # (B, 3, R, R)
        encoded = encode_batch(
            self.base, pixels, [p.caption for p in prepared], [example.where for example in examples]
        )
        members = []
        for row, item in enumerate(prepared):
            tensors = {name: _own(value[row]) for name, value in encoded.items()}
            tensors["time_ids"] = torch.tensor(
                [*item.original_size, *item.crop_top_left, self.resolution, self.resolution]
            )
            members.append(safetensors_bytes(tensors))
        return members

    def empty_caption(self) -> bytes:
        """The empty caption's embeddings (what caption dropout trains on)."""
        empty = encode_prompt(self.base, [""], do_cfg=False)
        tensors = {"embeds": _own(empty.embeds[0])}
        if empty.pooled is not None:
            tensors["pooled"] = _own(empty.pooled[0])
        return safetensors_bytes(tensors)


def _own(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU copy with its own storage (safetensors refuses views)."""
    return tensor.detach().to("cpu", copy=True).contiguous()


# ---------------------------------------------------------------------------------------------
# Reading a unit's inputs
# ---------------------------------------------------------------------------------------------


def read_inputs(source: IndexedSource | StreamSource, unit: WorkUnit) -> Iterator[InputSample | Skipped]:
    """The unit's samples in order: decoded, or (where, reason) when unreadable."""
    if unit.records is not None:
        for index in unit.records:
            try:
                yield _indexed_input(source, index)
            except InputFileError as error:
                yield (source.records[index].where, str(error))
        return
    for position, raw in enumerate(source.read_shard(unit.input_shard)):
        key = f"{unit.index:06d}_{position:06d}"
        try:
            example = source.decode(raw)
        except InputFileError as error:
            yield (raw.where, error.problem)
            continue
        extension = next(e for e in IMAGE_EXTENSIONS if e in raw.members)
        yield InputSample(key, example, raw.members[extension], extension)
    broken, source.errors = source.errors, []  # a truncated or corrupt tar: the samples before it count
    yield from broken


def _indexed_input(source: IndexedSource, index: int) -> InputSample:
    example = source.load(index)
    path = source.records[index].image
    extension = Path(path).suffix.lower().lstrip(".") if isinstance(path, Path) else ""
    if extension in IMAGE_EXTENSIONS:
        try:
            data = path.read_bytes()  # the original file: no re-encoding loss
        except OSError as error:
            raise InputFileError(path, f"cannot read: {error.strerror or error}") from None
    else:  # a datasets row or a format WebDataset readers do not take: lossless PNG
        data, extension = png_bytes(example.image), "png"
    return InputSample(f"{index:09d}", example, data, extension)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# A unit's members
# ---------------------------------------------------------------------------------------------


def make_samples(
    source: IndexedSource | StreamSource,
    unit: WorkUnit,
    *,
    conditions: ConditionMaker,
    latents: LatentEncoder | None,
    batch_size: int,
    on_progress=None,
) -> tuple[list[dict[str, bytes | str]], list[Skipped]]:
    """The tar samples of `unit` and the inputs skipped (with reasons)."""
    samples: list[dict[str, bytes | str]] = []
    skipped: list[Skipped] = []
    batch: list[InputSample] = []

    def flush() -> None:
        samples.extend(_make_batch(batch, conditions, latents, skipped))
        if on_progress is not None:
            on_progress(len(batch))
        batch.clear()

    for item in read_inputs(source, unit):
        if isinstance(item, tuple):
            skipped.append(item)
            if on_progress is not None:
                on_progress(1)
            continue
        batch.append(item)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return samples, skipped


def _make_batch(
    batch: list[InputSample],
    conditions: ConditionMaker,
    latents: LatentEncoder | None,
    skipped: list[Skipped],
) -> list[dict[str, bytes | str]]:
    made = conditions.make([item.example for item in batch])
    kept = []
    for item, condition in zip(batch, made, strict=True):
        if isinstance(condition, str):
            skipped.append((item.example.where, condition))
            continue
        item.example.condition = condition
        kept.append(item)
    encoded = latents.encode([item.example for item in kept]) if latents and kept else [None] * len(kept)
    record = conditions.record()
    samples = []
    for item, latent_bytes in zip(kept, encoded, strict=True):
        example = item.example
        description = {
            "source": example.where,
            "caption": example.caption,
            "size": list(example.image.size),
            "condition": record,
        }
        sample = {
            "__key__": item.key,
            item.image_extension: item.image_bytes,
            CONDITION_MEMBER: png_bytes(example.condition),
            "txt": example.caption.encode("utf-8"),
            "json": json.dumps(description, sort_keys=True).encode("utf-8"),
        }
        if latent_bytes is not None:
            sample[LATENTS_MEMBER] = latent_bytes
        samples.append(sample)
    return samples
