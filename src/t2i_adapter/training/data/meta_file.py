"""The original repository's meta file: one image path per line, condition and caption beside it.

```
# laion_depth_meta.txt
images/0001.png        -> images/0001.depth.png (condition), images/0001.txt (caption, first line)
images/0002.jpg
```

Relative paths are taken from the meta file's folder (or, failing that, the current folder, as
the original scripts did). Empty lines and lines starting with `#` are ignored.
"""

from __future__ import annotations

from pathlib import Path

from t2i_adapter.errors import InputFileError, T2IAdapterError
from t2i_adapter.io.text import MANIFEST_MAX_BYTES, read_text
from t2i_adapter.training.data.example import Record, condition_path_beside, load_file_record
from t2i_adapter.training.data.source import IndexedSource, settle_conditions


def _resolve(line: str, folder: Path) -> Path:
    path = Path(line).expanduser()
    if path.is_absolute():
        return path
    beside = folder / path
    return beside if beside.exists() or not path.exists() else path


def open_meta_file(path: Path, cond_type: str | None) -> IndexedSource:
    """Records of a meta file; `cond_type` names the `<stem>.<cond_type>.png` condition files."""
    if not cond_type:
        raise T2IAdapterError(f"{path}: a meta file needs --cond-type (the <stem>.<cond_type>.png files)")
    lines = read_text(path, max_bytes=MANIFEST_MAX_BYTES, what="the meta file").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        image = _resolve(line, path.parent)
        records.append(
            Record(
                where=f"{path}:{number}",
                image=image,
                condition=condition_path_beside(image, cond_type),
                caption_file=image.with_suffix(".txt"),
            )
        )
    if not records:
        raise InputFileError(path, "the meta file lists no images")
    records, computed = settle_conditions(
        records, cond_type, path=str(path), has_condition=lambda r: r.condition.is_file()
    )
    return IndexedSource(
        format="meta",
        path=str(path),
        records=records,
        load_record=load_file_record,
        cond_type=cond_type,
        computes_condition=computed,
    )
