"""`open_dataset(path, ...)`: pick the format from the path (or `data_format`) and open it;
`open_dataset_with(path, options)`: the same, with the format and column names read from settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from t2i_adapter.errors import InputFileError, UnknownNameError
from t2i_adapter.training.data.folder import open_folder
from t2i_adapter.training.data.hf_dataset import HUB_PREFIX, is_saved_dataset, open_hf_dataset
from t2i_adapter.training.data.jsonl import open_jsonl
from t2i_adapter.training.data.meta_file import open_meta_file
from t2i_adapter.training.data.shards import StreamSource, is_shard_location, open_shards
from t2i_adapter.training.data.source import IndexedSource, infer_condition_channels

FORMATS = ("meta", "folder", "jsonl", "webdataset", "hf")


def detect_format(location: str) -> str:
    """The format of `location` from its name and contents (see docs/training.md)."""
    if location.startswith(HUB_PREFIX):
        return "hf"
    if is_shard_location(location):
        return "webdataset"
    path = Path(location)
    if not path.exists():
        raise InputFileError(location, "no such file or folder")
    if path.is_dir():
        return "hf" if is_saved_dataset(path) else "folder"
    if path.suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    return "meta"


def open_dataset(
    location: str | Path,
    *,
    data_format: str = "auto",
    cond_type: str | None = None,
    condition_channels: int | None = None,
    image_column: str = "image",
    condition_column: str = "conditioning_image",
    caption_column: str = "text",
    rank: int = 0,
    world_size: int = 1,
) -> IndexedSource | StreamSource:
    """Open a training dataset in any supported format.

    WebDataset shards open as process `rank`'s share of `world_size` (see `shards.shard_share`).
    """
    location = str(location)
    kind = detect_format(location) if data_format == "auto" else data_format
    if kind == "webdataset":
        return open_shards(location, cond_type, condition_channels, rank=rank, world_size=world_size)
    if kind == "hf":
        source = open_hf_dataset(
            location,
            cond_type,
            image_column=image_column,
            condition_column=condition_column,
            caption_column=caption_column,
        )
    elif kind in ("meta", "folder", "jsonl"):
        path = Path(location)
        if not path.exists():
            raise InputFileError(path, "no such file or folder")
        opener = {"meta": open_meta_file, "folder": open_folder, "jsonl": open_jsonl}[kind]
        source = opener(path, cond_type)
    else:
        raise UnknownNameError("dataset format", kind, FORMATS)
    source.condition_channels = infer_condition_channels(source, condition_channels)
    return source


# The settings that say how to read a dataset, by the same names in TrainConfig, the prepare
# settings and the `data check` arguments.
READING_OPTIONS = ("data_format", "cond_type", "image_column", "condition_column", "caption_column")


def open_dataset_with(location: str | Path, options: Any, **extra: Any) -> IndexedSource | StreamSource:
    """`open_dataset(location, ...)` with `READING_OPTIONS` read from `options` (any object that
    has them as attributes); `extra` passes the rest (`rank`, `world_size`, ...)."""
    return open_dataset(location, **{name: getattr(options, name) for name in READING_OPTIONS}, **extra)
