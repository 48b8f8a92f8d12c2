"""Shards written by `t2i-adapter data prepare`: their files, and reading them back.

A prepared folder holds plain WebDataset shards (any WebDataset reader, and the trainer's
streaming path, read them as they are) plus the files that describe the run:

```
prepared/
  prepare.json             the run's settings (written first; `--resume` must match them)
  shard-000000.tar ...     one sample per key: image (.jpg/.png/...), cond.png, txt, json,
                           and with --model latents.safetensors (VAE posterior + text embeddings)
  empty.safetensors        with --model: the empty caption's embeddings (caption dropout)
  index.json               written last: every shard with its sample count (the run is complete)
  report.txt               the samples that were skipped, with the reason
  .prepare/                per-shard records and per-process progress (for --resume)
```

Each sample's `cond.png` has its image's size. Its `json` member records where the sample came
from and how its condition was made: `{"source": ..., "caption": ..., "size": [w, h],
"condition": {"from": "dataset"|"preprocessor", "type": ..., "options": {...}}}`.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors.torch import load, load_file

from t2i_adapter.conditions.tensor import condition_to_tensor
from t2i_adapter.errors import InputFileError
from t2i_adapter.io.images import load_image_from_bytes
from t2i_adapter.io.text import MANIFEST_MAX_BYTES, parse_json, read_text
from t2i_adapter.training.data.batches import TrainingSample
from t2i_adapter.training.data.example import Example, Record
from t2i_adapter.training.data.shards import IMAGE_EXTENSIONS
from t2i_adapter.training.data.source import IndexedSource, is_grey_mode, registered_preprocessor
from t2i_adapter.training.data.transforms import center_crop_condition

FORMAT_VERSION = 1
SETTINGS_FILE = "prepare.json"
INDEX_FILE = "index.json"
REPORT_FILE = "report.txt"
EMPTY_CAPTION_FILE = "empty.safetensors"
WORK_FOLDER = ".prepare"
CONDITION_MEMBER = "cond.png"
LATENTS_MEMBER = "latents.safetensors"
SHARD_PATTERN = "shard-{:06d}.tar"


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, None when the file does not exist; a clear error when it is broken."""
    if not os.path.lexists(path):
        return None
    data = parse_json(read_text(path, max_bytes=MANIFEST_MAX_BYTES), path)  # regular files only, capped
    if not isinstance(data, dict):
        raise InputFileError(path, "not a JSON object")
    return data


def prepared_index(folder: str | Path) -> dict[str, Any] | None:
    """The `index.json` of a complete prepared folder, or None when `folder` is not one."""
    path = Path(folder)
    if not path.is_dir():
        return None
    return read_json(path / INDEX_FILE)


# ---------------------------------------------------------------------------------------------
# Random access, for training on the cached latents
# ---------------------------------------------------------------------------------------------


class ShardMembers:
    """Random access to the samples of tar shards: one scan of a shard's headers gives every member's
    offset; a sample is then read with one seek per member. Handles open lazily, per process (a
    DataLoader worker opens its own), so a process reads only the bytes of its own samples."""

    def __init__(self) -> None:
        self._offsets: dict[
            str, list[dict[str, tuple[int, int]]]
        ] = {}  # shard -> samples -> ext -> (at, size)
        self._handles: dict[str, Any] = {}

    def __getstate__(self) -> dict:
        return {"_offsets": self._offsets, "_handles": {}}

    def samples(self, shard: str) -> list[dict[str, tuple[int, int]]]:
        """The member offsets of each sample of `shard`, in stored order."""
        if shard not in self._offsets:
            from webdataset.tariterators import base_plus_ext  # the optional `data` extra

            samples, keys = [], {}
            try:
                with tarfile.open(shard, "r:") as tar:
                    for member in tar:
                        key, extension = base_plus_ext(member.name)
                        if not member.isfile() or key is None:
                            continue
                        if key not in keys:
                            keys[key] = len(samples)
                            samples.append({})
                        samples[keys[key]][extension.lower()] = (member.offset_data, member.size)
            except (OSError, tarfile.TarError) as error:
                raise InputFileError(shard, f"cannot read the shard ({error})") from None
            self._offsets[shard] = samples
        return self._offsets[shard]

    def read(self, shard: str, position: int) -> dict[str, bytes]:
        """Sample `position` of `shard`: its members' bytes by extension."""
        handle = self._handles.get(shard)
        if handle is None:
            handle = self._handles[shard] = open(shard, "rb")  # noqa: SIM115 (kept open for the next read)
        members = {}
        for extension, (offset, size) in self.samples(shard)[position].items():
            handle.seek(offset)
            members[extension] = handle.read(size)
        return members


def open_prepared(folder: str | Path, index: dict[str, Any], condition_channels: int | None) -> IndexedSource:
    """An `IndexedSource` over a prepared folder's samples (records in shard order, as prepared).

    Its records are `(shard, position)` pairs, read by random access (`ShardMembers`).
    """
    members = ShardMembers()
    records = [
        Record(
            where=f"{Path(folder) / shard['name']}#{position}",
            image=(str(Path(folder) / shard["name"]), position),
        )
        for shard in index["shards"]
        for position in range(shard["samples"])
    ]

    def load_record(record: Record, mode: str) -> Example:
        sample = members.read(*record.image)
        image_bytes = next((sample[e] for e in IMAGE_EXTENSIONS if e in sample), None)
        if image_bytes is None or CONDITION_MEMBER not in sample:
            raise InputFileError(record.where, "not a prepared sample (no image or cond.png member)")
        return Example(
            where=record.where,
            image=load_image_from_bytes(image_bytes, record.where, mode="RGB"),
            condition=load_image_from_bytes(
                sample[CONDITION_MEMBER], record.where + " (condition)", mode=mode
            ),
            caption=sample.get("txt", b"").decode("utf-8", errors="replace").strip(),
        )

    cond_type = index["settings"].get("cond_type")
    if condition_channels is None:
        spec = registered_preprocessor(cond_type)
        if spec is not None:
            condition_channels = spec.channels
        else:
            first = members.read(*records[0].image)[CONDITION_MEMBER]
            with Image.open(io.BytesIO(first)) as opened:
                condition_channels = 1 if is_grey_mode(opened.mode) else 3
    return IndexedSource(
        format="prepared",
        path=str(folder),
        records=records,
        load_record=load_record,
        cond_type=cond_type,
        condition_channels=condition_channels,
    )


def load_prepared(source: IndexedSource, resolution: int) -> Callable[[int, int, int], TrainingSample]:
    """The cached-sample loader of `open_prepared`'s source: stored encodings, and the condition
    given the centre crop the latents were made from (what `--cache-latents` on the files stores)."""
    members = ShardMembers()

    def load_sample(index: int, epoch: int, position: int) -> TrainingSample:
        record = source.records[index]
        sample = members.read(*record.image)
        if LATENTS_MEMBER not in sample:
            raise InputFileError(record.where, f"no {LATENTS_MEMBER} member (prepared without --model)")
        tensors = load(sample[LATENTS_MEMBER])
        condition = load_image_from_bytes(
            sample[CONDITION_MEMBER], record.where + " (condition)", mode=source.condition_mode
        )
        condition = center_crop_condition(condition, resolution)
        return TrainingSample(
            position=position,
            condition=condition_to_tensor(condition, source.condition_channels)[0],  # (C, R, R)
            time_ids=tensors["time_ids"],
            latent_mean=tensors["latent_mean"],
            latent_std=tensors["latent_std"],
            embeds=tensors["embeds"],
            pooled=tensors.get("pooled"),
        )

    return load_sample


def empty_caption(folder: str | Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(embeds, pooled or None) of the empty caption a prepare run with `--model` stored."""
    path = Path(folder) / EMPTY_CAPTION_FILE
    if not path.is_file():
        raise InputFileError(path, "missing: the folder was prepared without --model")
    tensors = load_file(str(path))
    return tensors["embeds"], tensors.get("pooled")
