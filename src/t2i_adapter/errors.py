"""User-facing errors.

Every error a user can cause (a bad file, an unknown name, a model that does not fit) is raised
as a `T2IAdapterError` whose message is one line naming the file or name and the problem. The
CLI prints it as `error: <message>` and exits with status 2; the web UI shows it in the page.
Anything else escaping is a bug in this package.
"""

from __future__ import annotations

from collections.abc import Iterable
from os import PathLike


class T2IAdapterError(Exception):
    """An error caused by the user's input; its message is one line, fit to show as it is."""


class InputFileError(T2IAdapterError):
    """A file the user gave cannot be used: missing, unreadable, corrupt, too large, wrong kind."""

    def __init__(self, path: str | PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class UnknownNameError(T2IAdapterError):
    """A name (condition type, scheduler, adapter kind, ...) is not one we know; lists the valid ones."""

    def __init__(self, what: str, name: str, valid: Iterable[str]):
        self.what = what
        self.name = name
        self.valid = sorted(valid)
        super().__init__(f"unknown {what} '{name}'; valid: {', '.join(self.valid)}")


class ModelMismatchError(T2IAdapterError):
    """Two models that cannot work together (an SDXL adapter on an SD1.5 UNet, wrong channels)."""


class DiskFullError(T2IAdapterError):
    """A write failed because the disk (or the user's quota) is full; nothing half-written is left."""

    def __init__(self, path: str | PathLike, device: str):
        self.path = str(path)
        self.device = device
        super().__init__(f"no space left on {device} while writing {self.path}")


class MissingWeightsError(T2IAdapterError):
    """Weights that are neither on disk nor downloadable right now (offline, no cache, no access)."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its class name when the message is empty).

    Library errors (transformers, safetensors, the hub) can span many lines; a user-facing error
    quotes only this line, so it stays one line.
    """
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
