"""Atomic writes: write a temporary file (or folder) beside the destination, fsync, `os.replace`.

A reader (or a crash) never sees a half-written output: either the old file or folder (or none)
or the complete new one. On any error inside the `with` block the temporary copy is removed and
the destination is left untouched. `atomic_path`/`atomic_write` are for one file,
`atomic_folder` for a folder (a diffusers model folder, a training checkpoint).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from os import PathLike
from pathlib import Path
from typing import IO, Any

from t2i_adapter.errors import DiskFullError, InputFileError, T2IAdapterError

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# how libraries that wrap the OS error (safetensors' Rust writer) still say it
_DISK_FULL_WORDS = ("No space left on device", "Disk quota exceeded", "os error 28", "os error 122")


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


# ---------------------------------------------------------------------------------------------
# A full disk: one line naming the device and the file, whatever the writer raised
# ---------------------------------------------------------------------------------------------


def is_disk_full(error: BaseException, folder: str | PathLike | None = None) -> bool:
    """Whether `error` (raised while writing into `folder`) means the disk or quota is full.

    An `OSError` says it with its errno; safetensors wraps it in its own error's text; torch's zip
    writer says only "file write failed", so then the folder's free space decides."""
    if isinstance(error, T2IAdapterError) or not isinstance(error, Exception):
        return False
    if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
        return True
    if any(words in str(error) for words in _DISK_FULL_WORDS):
        return True
    return folder is not None and _no_free_space(Path(folder))


def _no_free_space(folder: Path) -> bool:
    try:
        return os.statvfs(_existing(folder)).f_bavail == 0
    except (OSError, AttributeError):  # no statvfs on Windows
        return False


def _existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def device_of(path: str | PathLike) -> str:
    """The device holding `path` as a user knows it: `/dev/sda1 (mounted on /home)`, or the mount point."""
    mount = _existing(Path(path))
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    with (
        contextlib.suppress(OSError, ValueError),
        open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts,
    ):
        for line in mounts:
            source, point = line.split()[:2]
            if point == str(mount) and source.startswith("/"):
                return f"{source} (mounted on {mount})"
    return str(mount)


def disk_full_error(path: str | PathLike) -> DiskFullError:
    return DiskFullError(path, device_of(path))


def _write_failure(error: BaseException, target: Path) -> T2IAdapterError | None:
    """The one-line error for a failed write into `target` (None: not the disk's fault, re-raise)."""
    if is_disk_full(error, target.parent):
        return disk_full_error(target)
    return None


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
        raise _write_failure(error, path) or InputFileError(
            path, f"cannot write: {error.strerror or error}"
        ) from None
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
        raise _write_failure(error, target) or InputFileError(
            target, f"cannot write: {error.strerror or error}"
        ) from None
    os.close(fd)
    try:
        yield Path(temp)
        with open(temp, "rb+") as written:
            os.fsync(written.fileno())
    except BaseException as error:
        _discard(temp)
        failure = _write_failure(error, target)
        if failure is None:
            raise
        raise failure from None
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
        raise _write_failure(error, target) or InputFileError(
            target, f"cannot write: {error.strerror or error}"
        ) from None
    try:
        yield temp
        fsync_tree(temp)
        _swap_folder(temp, target)
    except Exception as error:
        failure = _write_failure(error, target)
        if failure is None:
            raise
        raise failure from None
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
        raise _write_failure(error, target) or InputFileError(
            target, f"cannot write: {error.strerror or error}"
        ) from None
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    fsync_folder(target.parent)
