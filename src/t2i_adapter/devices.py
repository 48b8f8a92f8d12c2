"""Which torch device a run uses: one rule for generation, preprocessors, evaluation and the demo.

`auto` (or nothing) means the fastest device present, in the order diffusers' own examples
use: CUDA, then Apple's MPS, then the CPU. A device named explicitly must exist here; one that
does not is a one-line error naming it, never a fallback to another device.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from t2i_adapter.errors import T2IAdapterError, UnknownNameError

if TYPE_CHECKING:
    import torch

AUTO = "auto"
DEVICE_NAMES = (AUTO, "cpu", "cuda", "cuda:N", "mps")
_DEVICE_NAME = re.compile(r"(auto|cpu(:0)?|cuda(:[0-9]{1,4})?|mps(:0)?)")


def check_device_name(device: str | None) -> None:
    """The one rule for a device's name (no torch needed, so settings check it before anything
    loads): `auto`, `cpu`, `cuda`, `cuda:N` or `mps`; anything else (`meta`, `xla`) is refused."""
    if device is not None and str(device).strip() and not _DEVICE_NAME.fullmatch(str(device).strip()):
        raise UnknownNameError("device", str(device), DEVICE_NAMES)


def mps_available() -> bool:
    """True when this torch build can use Apple's Metal GPU."""
    import torch

    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """`None`/`auto` -> CUDA, else MPS, else CPU; a named device is checked to exist here."""
    import torch

    if not isinstance(device, torch.device):
        check_device_name(device)
    if device is None or str(device).strip() in ("", AUTO):
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_available() else torch.device("cpu")
    try:
        chosen = torch.device(str(device).strip())
    except RuntimeError:
        raise UnknownNameError("device", str(device), DEVICE_NAMES) from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise T2IAdapterError(f"device '{device}' asked for, but no CUDA GPU is available here; use cpu")
        count = torch.cuda.device_count()
        if chosen.index is not None and chosen.index >= count:
            raise T2IAdapterError(f"device '{device}' does not exist (this machine has {count} CUDA GPU(s))")
    if chosen.type == "mps" and not mps_available():
        raise T2IAdapterError(f"device '{device}' asked for, but this torch build sees no Apple MPS GPU")
    return chosen


COMPILERS = ("g++", "c++", "clang++")  # what torch.compile's inductor needs on the CPU


def compile_supported(device: torch.device, backend: str = "inductor") -> tuple[bool, str]:
    """Whether `torch.compile` can run on `device` here, and if not why (cheap checks, nothing
    compiled): not on MPS, and for inductor not without a C++ compiler on the CPU, not without
    Triton on CUDA. The one probe for `train --compile` and `generate --compile`."""
    import os
    import shutil

    import torch

    if device.type == "mps":
        return False, "torch.compile is not supported on MPS"
    if not torch._dynamo.is_dynamo_supported():
        return False, "torch.compile does not support this Python"
    if backend != "inductor":  # (tests swap in dynamo's eager backend: no code generation)
        return True, ""
    if device.type == "cpu":
        names = [os.environ["CXX"]] if os.environ.get("CXX") else list(COMPILERS)
        if not any(shutil.which(name) for name in names):
            return False, "no C++ compiler (g++ or clang++) for torch.compile on the CPU"
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return False, "torch.compile on CUDA needs Triton (pip install triton)"
    return True, ""
