"""Small files a user points at (captions, manifests, JSON), read with bounds.

Own code: Python's readers block forever on a FIFO, read `/dev/zero` until memory runs out and
recurse once per JSON nesting level; here a path must be a regular file (after following links),
a read stops at a size cap, and too-deep JSON is one error line.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from os import PathLike
from pathlib import Path
from typing import Any

from t2i_adapter.errors import InputFileError

CAPTION_MAX_BYTES = 1 << 20  # a caption (or a sample's .json) larger than 1 MiB is not a caption
MANIFEST_MAX_BYTES = 1 << 30  # meta files, JSONL manifests and job files

_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular_file(path: str | PathLike, what: str = "the file") -> int:
    """A read-only descriptor of `path`, which must be a regular file once links are followed.

    Opened without blocking (a FIFO would wait for a writer), then checked on the descriptor
    itself, so a file swapped for a pipe or device in between is refused too."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InputFileError(path, "no such file") from None
    except OSError as error:
        problem = "it is a folder" if error.errno == errno.EISDIR else error.strerror
        raise InputFileError(path, f"cannot read {what}: {problem}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise InputFileError(path, f"cannot read {what}: it is {_kind(mode)}, not a regular file")
    return fd


def read_bytes(path: str | PathLike, *, max_bytes: int, what: str = "the file") -> bytes:
    """The bytes of a regular file of at most `max_bytes` (read up to the cap, whatever stat says)."""
    fd = open_regular_file(path, what)
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(max_bytes + 1)
        except OSError as error:
            raise InputFileError(path, f"cannot read {what}: {error.strerror or error}") from None
    if len(data) > max_bytes:
        raise InputFileError(path, f"cannot read {what}: larger than {_size(max_bytes)}")
    return data


def read_text(path: str | PathLike, *, max_bytes: int, what: str = "the file") -> str:
    """A UTF-8 text file, as `read_bytes` reads it."""
    data = read_bytes(path, max_bytes=max_bytes, what=what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputFileError(path, f"cannot read {what}: not UTF-8 text") from None


def parse_json(text: str | bytes, name: str | PathLike, *, what: str = "the file") -> Any:
    """`json.loads` whose failures (bad syntax, bad bytes, nesting deep enough to exhaust the
    stack) are one `InputFileError` naming `name`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InputFileError(name, f"{what} is not valid JSON ({error.msg})") from None
    except UnicodeDecodeError:
        raise InputFileError(name, f"{what} is not UTF-8 text") from None
    except RecursionError:  # the decoder recurses once per nesting level
        raise InputFileError(name, f"{what} is nested too deeply") from None


def _size(count: int) -> str:
    return f"{count >> 30} GiB" if count >= 1 << 30 else f"{count >> 20} MiB"


def is_regular_file(path: str | PathLike) -> bool:
    """Whether `path` is a regular file after following links (no FIFO, device or socket)."""
    try:
        return stat.S_ISREG(os.stat(Path(path)).st_mode)
    except (OSError, ValueError):
        return False
