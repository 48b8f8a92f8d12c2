"""What every dataset format provides: records that can be loaded by index, or a stream.

`IndexedSource` (meta file, folder, JSONL, Hugging Face datasets) knows all its records up front,
so the data check can look at each one and the trainer can visit them in a seeded random order.
`StreamSource` (WebDataset shards) is read front to back; see `shards.py`.

Conditions come from files (or a column) when the dataset has them; when it has none and
`cond_type` names a registered preprocessor (`canny`, `sketch`, ...), they are computed from each
image after it is resized and cropped (`computes_condition`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from t2i_adapter.conditions.registry import get_preprocessor
from t2i_adapter.errors import InputFileError, T2IAdapterError, UnknownNameError
from t2i_adapter.training.data.example import Example, Record, condition_path_beside, load_file_record


def registered_preprocessor(cond_type: str | None):
    """The registry's spec for `cond_type`, or None when it is not a registered preprocessor."""
    if not cond_type:
        return None

    try:
        return get_preprocessor(cond_type)
    except UnknownNameError:
        return None


@dataclass
class IndexedSource:
    """A dataset whose records are all known up front."""

    format: str
    path: str
    records: list[Record]
    load_record: Callable[[Record, str], Example]
    cond_type: str | None = None
    computes_condition: bool = False
    condition_channels: int | None = None
    # entries that never became records (a JSONL line that is not JSON, ...): (where, problem)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    # the Pillow mode of the first condition when it is not a file (a datasets column)
    condition_mode_hint: str | None = None

    streamed = False

    def __len__(self) -> int:
        return len(self.records)

    @property
    def condition_mode(self) -> str:
        return "L" if self.condition_channels == 1 else "RGB"

    def load(self, index: int) -> Example:
        """Decode record `index`; raises `InputFileError` for a missing or corrupt piece."""
        example = self.load_record(self.records[index], self.condition_mode)
        if example.condition is None and not self.computes_condition:
            raise InputFileError(example.where, "no condition map for this sample")
        return example

    def keep_only(self, indices: list[int]) -> IndexedSource:
        """The same source restricted to `indices` (the records that passed the data check)."""
        kept = [self.records[i] for i in indices]
        return IndexedSource(
            format=self.format,
            path=self.path,
            records=kept,
            load_record=self.load_record,
            cond_type=self.cond_type,
            computes_condition=self.computes_condition,
            condition_channels=self.condition_channels,
        )


def settle_conditions(
    records: list[Record], cond_type: str | None, *, path: str, has_condition: Callable[[Record], bool]
) -> tuple[list[Record], bool]:
    """Decide where conditions come from: the dataset's own files/column, or a preprocessor.

    Returns the records (with `condition=None` when computed) and whether they are computed.
    """
    if any(has_condition(record) for record in records):
        return records, False
    if registered_preprocessor(cond_type) is not None:
        return [Record(r.where, r.image, None, r.caption, r.caption_file) for r in records], True
    if cond_type:
        # No condition file anywhere: the data check reports each missing `<stem>.<cond_type>` file.
        return records, False
    raise T2IAdapterError(f"{path}: the dataset has no condition maps; pass --cond-type")


def images_with_files_beside(
    format: str, path: Path, images: list[tuple[str, Path]], cond_type: str
) -> IndexedSource:
    """A source of image files whose condition (`<stem>.<cond_type>.*`) and caption (`<stem>.txt`)
    files sit beside them (a folder, a meta file); `images` are (where, image file) pairs."""
    records = [
        Record(
            where=where,
            image=image,
            condition=condition_path_beside(image, cond_type),
            caption_file=image.with_suffix(".txt"),
        )
        for where, image in images
    ]
    records, computed = settle_conditions(
        records, cond_type, path=str(path), has_condition=lambda r: r.condition.is_file()
    )
    return IndexedSource(
        format=format,
        path=str(path),
        records=records,
        load_record=load_file_record,
        cond_type=cond_type,
        computes_condition=computed,
    )


def infer_condition_channels(source: IndexedSource, configured: int | None) -> int:
    """Adapter input channels: configured, else the preprocessor's, else the first condition file's mode."""
    if configured is not None:
        return configured
    spec = registered_preprocessor(source.cond_type)
    if spec is not None:
        return spec.channels

    if source.condition_mode_hint is not None:
        return 1 if is_grey_mode(source.condition_mode_hint) else 3
    for record in source.records[:50]:
        if record.condition is None:
            continue
        try:
            if hasattr(record.condition, "mode"):
                mode = record.condition.mode
            else:
                with Image.open(record.condition) as opened:
                    mode = opened.mode
        except Exception:  # a bad file: the data check reports it; try the next one
            continue
        return 1 if is_grey_mode(mode) else 3
    return 3


def is_grey_mode(mode: str) -> bool:
    """True for Pillow modes that hold one channel (a 1-channel condition map)."""
    return mode in ("1", "L", "LA", "I", "F") or mode.startswith("I;16")
