"""One process or several (DDP): the accelerator, and what the processes must agree on.

The same training code runs in one plain process and under `accelerate launch` / torchrun. The main
process alone checks the data and writes files; these helpers share its verdicts, so every process
stops together on a failure instead of waiting for the others forever, and check at each
checkpoint that the processes still hold the same adapter weights.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast_object_list

from t2i_adapter.errors import T2IAdapterError


def start_accelerator(mixed_precision: str) -> Accelerator:
    """One process, or this process's place among several when launched by accelerate/torchrun."""
    # accelerate keeps its state per process; a second `train()` in the same process (the demo trains
    # several adapters) may use another precision, so start from a fresh state (the distributed
    # set-up, PartialState, is kept).
    AcceleratorState._reset_state()
    try:
        return Accelerator(mixed_precision=mixed_precision, cpu=_distributed_without_gpu())
    except ValueError as error:  # e.g. fp16 without a GPU
        raise T2IAdapterError(f"mixed precision '{mixed_precision}': {error}") from None


# Processes that split work unevenly (data prepare, batch generation) wait for each other at the end;
# a share can take hours, far longer than the collective's default 30-minute timeout.
LONG_WAIT = timedelta(days=2)


def process_state() -> PartialState:
    """accelerate's process state without an Accelerator (no model to wrap): one plain process, or
    this one's place among those `accelerate launch` started (over gloo on a machine without CUDA)."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return PartialState()
    return PartialState(cpu=_distributed_without_gpu(), timeout=LONG_WAIT)


def _distributed_without_gpu() -> bool:
    """Several processes (`accelerate launch`, torchrun) on a machine without CUDA: DDP over gloo on CPUs.

    accelerate only picks its multi-CPU mode when told the run is on CPUs; without this a CPU-only
    multi-process launch would train N independent copies.
    """
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def from_main_process(accelerator: Accelerator, value: Any) -> Any:
    """`value` as the main process holds it, on every process (pickled through the process group)."""
    if accelerator.num_processes == 1:
        return value
    shared = [value]
    broadcast_object_list(shared)
    return shared[0]


def stop_together(accelerator: Accelerator, failure: Exception | None, error_type: type[Exception]) -> None:
    """Raise the main process's `failure` on every process (as `error_type` where it is only a message)."""
    message = from_main_process(accelerator, str(failure) if failure is not None else None)
    if failure is None and message is not None:
        failure = error_type(message)
    if failure is not None:
        raise failure


def ranks_in_sync(accelerator: Accelerator, adapter: torch.nn.Module) -> list[float]:
    """A checksum of the adapter's weights on every process; differing values mean DDP drifted."""
    with torch.no_grad():
        checksum = sum(
            p.double().sum() * (i + 1) for i, p in enumerate(accelerator.unwrap_model(adapter).parameters())
        )
    checksums = accelerator.gather(checksum.reshape(1).to(accelerator.device)).tolist()
    if any(value != checksums[0] for value in checksums):
        raise T2IAdapterError(
            f"the processes' adapter weights differ ({checksums}); distributed training is broken"
        )
    return checksums
