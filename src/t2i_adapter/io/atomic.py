"""Atomic writes: write a temporary file (or folder) beside the destination, fsync, `os.replace`.

A reader (or a crash) never sees a half-written output: either the old file or folder (or none)
or the complete new one. On any error inside the `with` block the temporary copy is removed and
the destination is left untouched. `atomic_path`/`atomic_write` are for one file,
`atomic_folder` for a folder (a diffusers model folder, a training checkpoint).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from os import PathLike
from pathlib import Path
from typing import IO, Any

from t2i_adapter.errors import InputFileError


def _current_umask() -> int:
    """The process umask, read without changing it (Linux `/proc`), else the common 0o022."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _prepare_folder(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputFileError(path, f"cannot create its folder: {error.strerror or error}") from None
    if path.is_dir():
        raise InputFileError(path, "is a folder, not a file name to write")


def _final_mode(path: Path) -> int:
    """Keep an existing file's permissions; a new file gets the usual 0o666 minus the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_current_umask()


def fsync_folder(folder: Path) -> None:
    """Make the renames inside `folder` durable; not possible on every platform, so best effort."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file under `folder`, then every folder, deepest first."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    for path in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
        fsync_folder(path)
    fsync_folder(folder)


def _commit(temp: str, path: Path, mode: int) -> None:
    try:
        os.chmod(temp, mode)
        os.replace(temp, path)
    except OSError as error:
        raise InputFileError(path, f"cannot write: {error.strerror or error}") from None
    fsync_folder(path.parent)


def _discard(temp: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(temp)


@contextlib.contextmanager
def atomic_path(path: str | PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix) for writers that need a file name.

    The caller writes the complete file to the yielded path; on a clean exit it is fsynced and
    renamed over `path`, on an exception it is deleted.
    """
    target = Path(path)
    _prepare_folder(target)
    mode = _final_mode(target)
    try:
        fd, temp = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent
        )
    except OSError as error:
        raise InputFileError(target, f"cannot write: {error.strerror or error}") from None
    os.close(fd)
    try:
        yield Path(temp)
        with open(temp, "rb+") as written:
            os.fsync(written.fileno())
    except BaseException:
        _discard(temp)
        raise
    try:
        _commit(temp, target, mode)
    except BaseException:
        _discard(temp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Yield an open file whose contents replace `path` atomically when the block ends cleanly."""
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_write supports the write modes 'w', 'wt' and 'wb', not {mode!r}")
    with atomic_path(path) as temp, open(temp, mode, **open_kwargs) as handle:
        yield handle
        handle.flush()


@contextlib.contextmanager
def atomic_folder(path: str | PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `path` to fill; on a clean exit it replaces `path`.

    Every file is fsynced, then the folder is renamed into place; an existing folder at `path`
    is first renamed aside and deleted only once the new one is in place (restored if the
    second rename fails), so `path` is always the old folder or the complete new one. On an
    exception the temporary folder is deleted. Its name starts with `.<name>.` so callers can
    sweep what a killed process left behind.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as error:
        raise InputFileError(target, f"cannot write: {error.strerror or error}") from None
    try:
        yield temp
        fsync_tree(temp)
        _swap_folder(temp, target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)  # already gone after a successful swap


def _swap_folder(temp: Path, target: Path) -> None:
    old = None
    try:
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / target.name)
        os.replace(temp, target)
    except OSError as error:
        if old is not None and not target.exists():
            os.replace(old / target.name, target)
        raise InputFileError(target, f"cannot write: {error.strerror or error}") from None
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    fsync_folder(target.parent)
