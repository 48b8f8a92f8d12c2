"""A Hugging Face `datasets` dataset with image, condition and caption columns.

`PATH` is a folder written by `Dataset.save_to_disk` (or a `DatasetDict` folder, whose `train`
split is used), or `hf:<hub name>[:<split>]` for `datasets.load_dataset` (through its cache; the
hub needs network access). Columns default to diffusers' names: `image`, `conditioning_image`,
`text` (change with `image_column`, `condition_column`, `caption_column`). Image columns may hold
`datasets.Image` values, file paths, or `{"bytes": ..., "path": ...}` dictionaries. Without a
condition column, a registered preprocessor (`--cond-type canny`) computes them. The adapter's
input channels follow the first condition's mode (grey: 1, colour: 3) unless configured.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from PIL import Image

from t2i_adapter.errors import InputFileError, T2IAdapterError, first_line
from t2i_adapter.io.images import load_image, load_image_from_bytes, normalize_image
from t2i_adapter.training.data.example import Example, Record
from t2i_adapter.training.data.source import IndexedSource, settle_conditions

HUB_PREFIX = "hf:"


def is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any(
        (path / name).is_file() for name in ("dataset_info.json", "state.json", "dataset_dict.json")
    )


def _open(location: str):
    import datasets  # optional dependency, slow to import: only for Hugging Face datasets

    try:
        if location.startswith(HUB_PREFIX):
            name, _, split = location[len(HUB_PREFIX) :].partition(":")
            return datasets.load_dataset(name, split=split or "train")
        dataset = datasets.load_from_disk(location)
    except Exception as error:  # missing files, offline hub, bad split: one line for the user
        raise InputFileError(location, f"cannot open the dataset: {first_line(error)}") from None
    if isinstance(dataset, datasets.DatasetDict):
        if "train" not in dataset:
            raise InputFileError(location, f"no 'train' split (splits: {', '.join(dataset)})")
        dataset = dataset["train"]
    return dataset


def _to_image(value: Any, where: str, mode: str) -> Image.Image:
    if isinstance(value, Image.Image):
        return normalize_image(value, mode=mode)
    if isinstance(value, dict) and value.get("bytes"):
        return load_image_from_bytes(value["bytes"], where, mode=mode)
    if isinstance(value, dict) and value.get("path"):
        return load_image(value["path"], mode=mode)
    if isinstance(value, str):
        return load_image(value, mode=mode)
    if isinstance(value, bytes | bytearray):
        return load_image_from_bytes(bytes(value), where, mode=mode)
    raise InputFileError(where, f"not an image ({type(value).__name__})")


def open_hf_dataset(
    location: str, cond_type: str | None, *, image_column: str, condition_column: str, caption_column: str
) -> IndexedSource:
    """Records of a `datasets` dataset (one per row)."""
    dataset = _open(location)
    columns = set(dataset.column_names)
    if image_column not in columns:
        raise T2IAdapterError(
            f"{location}: no image column '{image_column}' (columns: {', '.join(sorted(columns))})"
        )
    has_conditions = condition_column in columns
    has_captions = caption_column in columns

    def load_row(record: Record, mode: str) -> Example:
        try:
            row = dataset[record.image]
        except Exception as error:  # a corrupt arrow file or an undecodable image cell
            raise InputFileError(record.where, f"cannot read the row ({error})") from None
        image = _to_image(row[image_column], record.where, "RGB")
        condition = None
        if record.condition is not None:
            condition = _to_image(row[condition_column], record.where + " (condition)", mode)
        caption = str(row[caption_column] or "") if has_captions else ""
        return Example(where=record.where, image=image, condition=condition, caption=caption)

    records = [
        Record(where=f"{location} row {i}", image=i, condition=i if has_conditions else None)
        for i in range(len(dataset))
    ]
    if not records:
        raise InputFileError(location, "the dataset has no rows")
    records, computed = settle_conditions(
        records, cond_type, path=location, has_condition=lambda r: r.condition is not None
    )
    hint = None
    if has_conditions:
        with contextlib.suppress(Exception):  # a bad first row: the data check reports it
            first = dataset[0][condition_column]
            hint = first.mode if isinstance(first, Image.Image) else None
    return IndexedSource(
        format="hf",
        path=location,
        records=records,
        load_record=load_row,
        cond_type=cond_type,
        computes_condition=computed,
        condition_mode_hint=hint,
    )
