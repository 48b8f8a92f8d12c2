"""A JSONL manifest: one JSON object per line, `{"image": ..., "condition": ..., "text": ...}`.

```
{"image": "img/a.png", "condition": "cond/a.png", "text": "a red car"}
{"image": "img/b.png", "text": "a blue house"}          # condition computed (--cond-type canny)
```

Relative paths are taken from the manifest's folder. `conditioning_image` and `caption` are
accepted as other names for `condition` and `text`. A line that is not a JSON object with an
`image` is reported with its line number and skipped.
"""

from __future__ import annotations

from pathlib import Path

from t2i_adapter.errors import InputFileError
from t2i_adapter.io.text import MANIFEST_MAX_BYTES, parse_json, read_text
from t2i_adapter.training.data.example import Record, load_file_record
from t2i_adapter.training.data.source import IndexedSource, settle_conditions

CONDITION_KEYS = ("condition", "conditioning_image")
CAPTION_KEYS = ("text", "caption")


def _first(entry: dict, keys: tuple[str, ...]):
    return next((entry[key] for key in keys if entry.get(key) is not None), None)


def open_jsonl(path: Path, cond_type: str | None) -> IndexedSource:
    """Records of a JSONL manifest."""
    lines = read_text(path, max_bytes=MANIFEST_MAX_BYTES, what="the manifest").splitlines()
    records, unreadable = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            entry = parse_json(line, where, what="the line")
        except InputFileError as error:
            unreadable.append((where, error.problem))
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            unreadable.append((where, 'not an object with an "image" path'))
            continue
        condition = _first(entry, CONDITION_KEYS)
        caption = _first(entry, CAPTION_KEYS)
        records.append(
            Record(
                where=where,
                image=path.parent / entry["image"],
                condition=None if condition is None else path.parent / str(condition),
                caption=None if caption is None else str(caption),
            )
        )
    if not records:
        raise InputFileError(path, "the manifest has no usable lines")
    records, computed = settle_conditions(
        records, cond_type, path=str(path), has_condition=lambda r: r.condition is not None
    )
    return IndexedSource(
        format="jsonl",
        path=str(path),
        records=records,
        load_record=load_file_record,
        cond_type=cond_type,
        computes_condition=computed,
        unreadable=unreadable,
    )
