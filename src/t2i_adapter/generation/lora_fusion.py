"""LoRAs fused into a compiled UNet's base weights, so its graph never changes with the LoRAs chosen.

A compiled UNet that ran peft's LoRA layers would guard on their active adapters and scales, and
recompile (a minute on a GPU) whenever a generation picked other LoRAs or scales; it would also
pay for two extra low-rank matmuls in every LoRA layer at every step. So on the compiled path
each LoRA layer's base weight is set, in place, to its original plus the active adapters' deltas
(`W0 + sum(scale * B @ A)`, summed in fp32 and rounded once), and while the compiled UNet samples
the peft wrappers are swapped out for their base layers: the graph sees the plain UNet whatever
the LoRAs, and takes the (mutated) weights as inputs, so a change of LoRAs or scales recompiles
nothing. Fused QKV projections (`to_qkv`, `to_kv`) are copies of `to_q`/`to_k`/`to_v`: they are
refreshed after every change, so the fusion stays on with LoRAs.
This needs Inductor's `freezing` off (its default): freezing bakes the weights in as constants
(`compiling` warns when it is on).

Restoring never subtracts a delta (`(W0 + d) - d` is not `W0` in floating point): the original of
every layer is copied to the CPU the first time it is fused and copied back, so any number of
switches leaves the base weights bit-identical to the originals.

The state lives on the UNet it mutates (`FusedLoras.of(unet)`): a pipeline that runs the same
UNet eagerly (peft's unfused layers, as it always did) restores the originals first.
A layer whose adapter peft cannot express as a plain delta (DoRA and other variants, a LoRA bias)
keeps its original weight and stays a peft layer in the graph (unfused, as before).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

ATTRIBUTE = "_t2i_fused_loras"  # where a UNet keeps its FusedLoras
Fused = tuple[tuple[str, float], ...]  # (adapter name, its scaling) merged into a layer


class FusedLoras:
    """The LoRAs merged into one module's base weights now, and the originals of the layers touched."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.originals: dict[str, torch.Tensor] = {}  # layer name -> its base weight before any LoRA (CPU)
        self.fused: dict[str, Fused] = {}  # layer name -> what is merged into its base weight now

    @classmethod
    def of(cls, module: torch.nn.Module) -> FusedLoras:
        """The module's own fusion state (made on first use)."""
        state = getattr(module, ATTRIBUTE, None)
        if state is None:
            state = cls(module)
            object.__setattr__(module, ATTRIBUTE, state)  # a plain attribute, not a submodule
        return state

    def sync(self) -> None:
        """Every LoRA layer's base weight = its original + the deltas of its active adapters (peft's
        choice, as `set_adapters`/`disable_lora` left it); only changed layers are rewritten."""
        layers = dict(lora_layers(self.module))
        changed = [name for name in self.fused if name not in layers]  # wrappers gone: restore
        for name in changed:
            self._write(name, _base_layer(self.module.get_submodule(name)), ())
        for name, layer in layers.items():
            wanted = _active(layer) if fusable(layer) else ()
            if wanted != self.fused.get(name, ()):
                self._write(name, layer, wanted)
                changed.append(name)
        refresh_fused_projections(self.module, changed)

    def restore(self) -> None:
        """The original base weights everywhere (the eager path runs peft's unfused layers on them)."""
        if not self.fused:
            return
        for name in list(self.fused):
            self._write(name, _base_layer(self.module.get_submodule(name)), ())
        refresh_fused_projections(self.module, list(self.originals))

    def _write(self, name: str, layer: Any, wanted: Fused) -> None:
        weight = _base_layer(layer).weight
        original = self.originals.get(name)
        if original is None:
            original = self.originals[name] = weight.detach().to("cpu", copy=True)
        with torch.no_grad():
            if wanted:
                merged = original.to(weight.device, torch.float32, copy=True)  # never the original itself
                for adapter, _ in wanted:
                    merged += layer.get_delta_weight(adapter).float()
                weight.copy_(merged)  # in place: the compiled graph (and CUDA graphs) read this tensor
            else:
                weight.copy_(original)
        if wanted:
            self.fused[name] = wanted
        else:
            self.fused.pop(name, None)

    @contextlib.contextmanager
    def plain(self) -> Iterator[None]:
        """The module with each fused LoRA layer replaced by its base layer (what the compiled graph
        sees: the same modules as before any LoRA was loaded); the peft layers come back after."""
        swapped = []
        try:
            for name, layer in lora_layers(self.module):
                if fusable(layer):
                    parent, _, child = name.rpartition(".")
                    owner = self.module.get_submodule(parent) if parent else self.module
                    setattr(owner, child, layer.base_layer)
                    swapped.append((owner, child, layer))
            yield
        finally:
            for owner, child, layer in swapped:
                setattr(owner, child, layer)


def lora_layers(module: torch.nn.Module) -> Iterator[tuple[str, Any]]:
    """(name, layer) of every peft LoRA layer in `module`."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, layer in module.named_modules():
        if isinstance(layer, BaseTunerLayer) and hasattr(layer, "lora_A"):
            yield name, layer


def fusable(layer: Any) -> bool:
    """Whether every adapter of the layer is a plain `scale * B @ A` delta (no DoRA or other
    variant, no LoRA bias): those can be merged and unmerged exactly through a kept original."""
    variants = getattr(layer, "lora_variant", {}) or {}
    dora = getattr(layer, "use_dora", {}) or {}
    biases = getattr(layer, "lora_bias", {}) or {}
    return not variants and not any(dora.values()) and not any(biases.values())


def _active(layer: Any) -> Fused:
    if layer.disable_adapters:
        return ()
    return tuple(
        (adapter, float(layer.scaling[adapter]))
        for adapter in layer.active_adapters
        if adapter in layer.lora_A
    )


def _base_layer(module: Any) -> Any:
    while hasattr(module, "base_layer"):
        module = module.base_layer
    return module


def refresh_fused_projections(module: torch.nn.Module, layer_names: list[str]) -> None:
    """Recopy fused QKV/KV projections from `to_q`/`to_k`/`to_v` in the attention blocks of `layer_names`."""
    for attention_name in sorted({name.rpartition(".")[0] for name in layer_names}):
        try:
            attention = module.get_submodule(attention_name) if attention_name else module
        except AttributeError:
            continue
        for fused, parts in (("to_qkv", ("to_q", "to_k", "to_v")), ("to_kv", ("to_k", "to_v"))):
            target = getattr(attention, fused, None)
            if target is not None:
                weights = [_base_layer(getattr(attention, part)).weight for part in parts]
                with torch.no_grad():
                    target.weight.copy_(torch.cat(weights))


def restore_originals(module: torch.nn.Module) -> None:
    """Undo any fusion in `module` (no-op when none was made): for the eager, unfused path."""
    state = getattr(module, ATTRIBUTE, None)
    if state is not None:
        state.restore()
