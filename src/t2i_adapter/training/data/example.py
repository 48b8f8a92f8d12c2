"""One training sample before any transform: an image, its condition map, its caption.

Every dataset format turns its entries into `Record`s (where the pieces are, and where the entry
came from, e.g. `meta.txt:12`), and a record into an `Example` (the decoded pieces). A record
that cannot be loaded raises `InputFileError` naming the file and the problem, which the data
check reports with the record's line and the trainer skips (or, with `--strict`, fails on).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from t2i_adapter.errors import InputFileError
from t2i_adapter.io.images import load_image
from t2i_adapter.io.text import CAPTION_MAX_BYTES, read_text

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass(frozen=True)
class Record:
    """Where one sample's pieces are; `condition` None means "compute it from the image"."""

    where: str  # "meta.txt:12", "data.jsonl:3", "photos/a.png", "row 7"
    image: Any  # a Path, or a row index for in-memory datasets
    condition: Any = None
    caption: str | None = None  # inline caption
    caption_file: Path | None = None


@dataclass
class Example:
    """A decoded sample: RGB image, condition map ("L" or "RGB", any size) or None, caption."""

    where: str
    image: Image.Image
    condition: Image.Image | None
    caption: str


def read_caption(path: Path) -> str:
    """The first line of a caption file (the original datasets' convention), stripped.

    Only a regular file of at most `CAPTION_MAX_BYTES` is read (no FIFO, no link to /dev/zero)."""
    if not os.path.lexists(path):
        raise InputFileError(path, "missing caption file")
    text = read_text(path, max_bytes=CAPTION_MAX_BYTES, what="the caption file")
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


def load_file_record(record: Record, condition_mode: str) -> Example:
    """Decode a record whose pieces are files on disk (meta file, folder and JSONL formats)."""
    image = load_image(record.image, mode="RGB")
    condition = None
    if record.condition is not None:
        condition = load_image(record.condition, mode=condition_mode)
    if record.caption is not None:
        caption = record.caption
    elif record.caption_file is not None:
        caption = read_caption(record.caption_file)
    else:
        caption = ""
    return Example(where=record.where, image=image, condition=condition, caption=caption)


def find_beside(image: Path, tag: str) -> Path | None:
    """`<stem>.<tag>.<ext>` next to `image` for any image extension, else None."""
    for suffix in IMAGE_SUFFIXES:
        candidate = image.with_name(f"{image.stem}.{tag}{suffix}")
        if candidate.is_file():
            return candidate
    return None


def condition_path_beside(image: Path, tag: str) -> Path:
    """The condition file for `image`: an existing `<stem>.<tag>.*`, else the expected `.png` path."""
    return find_beside(image, tag) or image.with_name(f"{image.stem}.{tag}.png")
