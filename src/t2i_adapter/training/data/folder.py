"""A folder of images with captions and condition maps beside them (searched recursively).

```
photos/
  a.png  a.depth.png  a.txt
  b.jpg  b.depth.png  b.txt
```

An image file is any `.png/.jpg/.jpeg/.webp/.bmp` that is not itself a tagged file
`<stem>.<tag>.<ext>` of another image in the same folder. With no condition files at all, a
registered preprocessor (`--cond-type canny`) computes them from the images. Without
`--cond-type`, the tag is taken from the files when there is exactly one.
"""

from __future__ import annotations

from pathlib import Path

from t2i_adapter.errors import InputFileError, T2IAdapterError
from t2i_adapter.training.data.example import IMAGE_SUFFIXES
from t2i_adapter.training.data.source import IndexedSource, images_with_files_beside


def _split_tagged(file: Path) -> tuple[str, str] | None:
    """`a.depth.png` -> ("a", "depth"); None for a file without an inner tag."""
    stem, dot, tag = file.stem.rpartition(".")
    return (stem, tag) if dot and stem and tag else None


def _images_and_tags(folder: Path) -> tuple[list[Path], set[str]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    stems = {(p.parent, p.stem) for p in files}
    images, tags = [], set()
    for file in files:
        tagged = _split_tagged(file)
        if tagged and (file.parent, tagged[0]) in stems:
            tags.add(tagged[1])
        else:
            images.append(file)
    return images, tags


def open_folder(path: Path, cond_type: str | None) -> IndexedSource:
    """Records of an image folder."""
    images, tags = _images_and_tags(path)
    if not images:
        raise InputFileError(path, f"no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    if not cond_type:
        if len(tags) != 1:
            found = ", ".join(sorted(tags)) or "none"
            raise T2IAdapterError(f"{path}: pass --cond-type (condition tags found: {found})")
        cond_type = next(iter(tags))
    return images_with_files_beside("folder", path, [(str(image), image) for image in images], cond_type)
