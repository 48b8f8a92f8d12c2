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
from t2i_adapter.training.data.source import IndexedSource, images_with_files_beside


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
    images = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            images.append((f"{path}:{number}", _resolve(line, path.parent)))
    if not images:
        raise InputFileError(path, "the meta file lists no images")
    return images_with_files_beside("meta", path, images, cond_type)
