"""Checkpoints that survive SIGKILL and a full disk, and a resume that continues exactly.

Layout of `output_dir`:

```
config.json, diffusion_pytorch_model.safetensors   the final adapter (diffusers): load_adapter(output_dir)
adapter.safetensors                                the final adapter as one file (+ .original. on request)
checkpoints/step-00000500/
    adapter/                      diffusers folder (T2IAdapter.from_pretrained reads it)
    adapter.safetensors           one file, diffusers keys, config in the metadata
    adapter.original.safetensors  original TencentARC keys (with --save-original-layout)
    training_state.pt             optimizer, LR schedule, step, data position, RNG states
```

A checkpoint is written into a hidden temporary folder, every file fsynced, then renamed into
place (`io.atomic.atomic_folder`), so a folder named `step-*` is always complete: a run killed at any
moment leaves either the new checkpoint or none, and the previous ones untouched. Only then are
checkpoints beyond the last K deleted. A failed write (disk full) removes the temporary folder,
keeps every earlier checkpoint, and stops the run with a one-line error.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from t2i_adapter.checkpoints import save_adapter
from t2i_adapter.checkpoints.detect import META_CONFIG, META_KIND
from t2i_adapter.checkpoints.read import read_pickle
from t2i_adapter.errors import DiskFullError, InputFileError, T2IAdapterError, first_line
from t2i_adapter.io.atomic import atomic_folder, atomic_path

CHECKPOINTS = "checkpoints"
STATE_FILE = "training_state.pt"
ADAPTER_FILE = "adapter.safetensors"
ORIGINAL_FILE = "adapter.original.safetensors"
ADAPTER_FOLDER = "adapter"
FINAL_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
_STEP_FOLDER = re.compile(r"^step-(\d+)$")


class CheckpointError(T2IAdapterError):
    """A checkpoint could not be written or read."""


# ---------------------------------------------------------------------------------------------
# RNG states (python, numpy, torch): plain containers, so `torch.load(weights_only=True)` reads them
# ---------------------------------------------------------------------------------------------


def rng_states() -> dict[str, Any]:
    version, state, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    states = {
        "python": [version, list(state), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def adapter_metadata(adapter: torch.nn.Module) -> dict[str, str]:
    """safetensors metadata that lets `load_adapter` rebuild the exact adapter from one file."""
    config = {k: v for k, v in dict(adapter.config).items() if not k.startswith("_")}
    return {"format": "pt", META_KIND: adapter.adapter_kind, META_CONFIG: json.dumps(config)}


def write_adapter_files(adapter: torch.nn.Module, folder: Path, *, original_layout: bool) -> None:
    """The adapter as a diffusers folder, one safetensors file, and optionally the original layout."""
    tensors = {key: value.detach().cpu().contiguous() for key, value in adapter.state_dict().items()}
    save_file(tensors, str(folder / ADAPTER_FILE), metadata=adapter_metadata(adapter))
    save_adapter(adapter, folder / ADAPTER_FOLDER, layout="diffusers", overwrite=True)
    if original_layout:
        save_adapter(adapter, folder / ORIGINAL_FILE, layout="original", overwrite=True)


def save_checkpoint(
    output_dir: Path,
    step: int,
    *,
    adapter: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler,
    training_state: dict[str, Any],
    keep: int,
    original_layout: bool = False,
) -> Path:
    """Write checkpoint `step` atomically, then delete all but the newest `keep`; returns its folder."""
    final = Path(output_dir) / CHECKPOINTS / f"step-{step:08d}"
    try:
        # a step saved again (a resumed run re-reaching it) replaces the old folder the same way
        with atomic_folder(final) as temp:
            write_adapter_files(adapter, temp, original_layout=original_layout)
            state = {
                "step": step,
                "optimizer": optimizer.state_dict(),
                "lr_scheduler": lr_scheduler.state_dict(),
                "rng": rng_states(),
                **training_state,
            }
            torch.save(state, temp / STATE_FILE)
    except (OSError, T2IAdapterError) as error:
        previous = latest_checkpoint(output_dir)
        kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
        if isinstance(error, DiskFullError):
            raise CheckpointError(f"{error}; checkpoint {final.name} not saved, {kept}") from None
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise CheckpointError(f"{final}: could not save the checkpoint ({reason}); {kept}") from None
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def publish_final_adapter(checkpoint: Path, output_dir: Path, *, original_layout: bool) -> None:
    """Copy the checkpoint's adapter to the top of `output_dir` (each file replaced atomically)."""
    copies = [(checkpoint / ADAPTER_FOLDER / name, output_dir / name) for name in FINAL_FILES]
    copies.append((checkpoint / ADAPTER_FILE, output_dir / ADAPTER_FILE))
    if original_layout:
        copies.append((checkpoint / ORIGINAL_FILE, output_dir / ORIGINAL_FILE))
    try:
        for source, destination in copies:
            with atomic_path(destination) as temp:
                shutil.copyfile(source, temp)
    except (OSError, DiskFullError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise CheckpointError(
            f"{output_dir}: could not write the final adapter ({reason}); it is in {checkpoint}"
        ) from None


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_FOLDER.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(output_dir: Path) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def remove_unfinished(output_dir: Path) -> None:
    """Delete temporary folders a killed run left behind (`atomic_folder` names them `.step-*`)."""
    root = Path(output_dir) / CHECKPOINTS
    if root.is_dir():
        for path in root.glob(".step-*"):
            shutil.rmtree(path, ignore_errors=True)


# what a training state holds, and the type of each entry (then what it may hold)
STATE_TYPES = {"step": int, "optimizer": dict, "lr_scheduler": dict, "rng": dict}
OPTIONAL_STATE_TYPES = {"samples_seen": int, "world_size": int, "stream": dict}


def load_checkpoint(checkpoint: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(adapter state dict, training state) of a checkpoint folder.

    Anything unusable (an empty, corrupt or refused file, a state of the wrong shape) is one
    `CheckpointError` naming the file and offering the checkpoint before it."""
    try:
        state = _read_state(checkpoint / STATE_FILE)
        adapter_state = _read_adapter(checkpoint / ADAPTER_FILE)
    except InputFileError as error:
        raise unusable(Path(error.path), error.problem) from None
    return adapter_state, state


def unusable(path: Path, problem: str) -> CheckpointError:
    """The error for a file of a checkpoint that cannot be resumed from, offering the one before."""
    return CheckpointError(f"{path}: {problem}; {_previous_offer(path.parent)}")


def _read_state(path: Path) -> dict[str, Any]:
    if path.is_file() and path.stat().st_size == 0:
        raise InputFileError(path, "is not a training state (empty file)")
    state = read_pickle(path)
    if not isinstance(state, dict):
        raise InputFileError(path, f"is not a training state (it holds a {type(state).__name__})")
    missing = next((key for key in STATE_TYPES if key not in state), None)
    if missing:
        raise InputFileError(path, f"is not a training state (no '{missing}')")
    for key, kind in {**STATE_TYPES, **OPTIONAL_STATE_TYPES}.items():
        value = state.get(key, kind())
        if not isinstance(value, kind) or isinstance(value, bool):
            raise InputFileError(path, f"is not a training state ('{key}' is a {type(value).__name__})")
    if state["step"] < 0:
        raise InputFileError(path, f"is not a training state (step {state['step']})")
    return state


def _read_adapter(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises its own error types, plus OSError
        raise InputFileError(path, f"not a valid safetensors file ({first_line(error)})") from None


def _previous_offer(checkpoint: Path) -> str:
    """What to do about an unreadable checkpoint: resume from the one before it, or start afresh."""
    earlier = [path for path in list_checkpoints(checkpoint.parent.parent) if path.name < checkpoint.name]
    if earlier:
        return (
            f"to resume from the previous checkpoint {earlier[-1].name}, move {checkpoint} out of "
            f"{checkpoint.parent} and run again with --resume"
        )
    return "there is no earlier checkpoint: start afresh with another --output-dir (or without --resume)"
