"""Adapter units (an adapter + its condition + weight + step window) and what they give each step.

The adapters run once per generation (`T2IAdapterPipeline._run_unit`); every denoising step then only
picks the units active at that step and combines their stored outputs (`StepConditioning`):
- spatial features: weighted sum across units, repeated over the batch and both guidance
  halves, passed to the UNet as `down_intrablock_additional_residuals`;
- style tokens: weighted, concatenated after the text tokens of the conditional half;
- with a CoAdapter fuser, the fuser mixes the active units' outputs instead of a plain sum.
The combination only changes when a unit's window opens or closes, so it is cached per set of
active units: the extra cost per step is a dictionary look-up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import T2IAdapter
from PIL import Image

from t2i_adapter.adapters.kinds import SPATIAL_KINDS
from t2i_adapter.adapters.spatial import describe_spatial_adapter
from t2i_adapter.errors import ModelMismatchError
from t2i_adapter.generation.settings import check_step_window

logger = logging.getLogger(__name__)


def describe_adapter(adapter: torch.nn.Module) -> torch.nn.Module:
    """Make sure `adapter` has `adapter_kind` (and, for spatial ones, the channel attributes).

    Modules from `load_adapter` already have them; a bare diffusers `T2IAdapter` gets them here.
    """
    if getattr(adapter, "adapter_kind", None) is not None:
        return adapter

    if isinstance(adapter, T2IAdapter):
        return describe_spatial_adapter(adapter)
    raise ModelMismatchError(f"{type(adapter).__name__} is not an adapter this package can use")


@dataclass
class AdapterUnit:
    """One adapter with its condition.

    `condition`: for spatial adapters a condition map (PIL image, or a tensor `(1, C, H, W)` in
    [0, 1]); for the style adapter a reference image (PIL) or CLIP-vision hidden states
    `(1, 257, width)`. The unit acts on steps whose fraction `step / steps` is in `[start, end)`.
    `task` names the condition for a CoAdapter fuser (`sketch`, `depth`, `style`, ...).
    """

    adapter: torch.nn.Module
    condition: Image.Image | torch.Tensor
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    task: str | None = None
    name: str = ""

    def __post_init__(self) -> None:
        self.adapter = describe_adapter(self.adapter)
        check_step_window(self.start, self.end, self.label)

    @property
    def kind(self) -> str:
        return self.adapter.adapter_kind

    @property
    def is_spatial(self) -> bool:
        return self.kind in SPATIAL_KINDS

    @property
    def label(self) -> str:
        return self.name or f"{self.kind} adapter"

    def is_active(self, step: int, total_steps: int) -> bool:
        """The original `cond_tau` rule, generalised: active while start <= step/total < end."""
        fraction = step / total_steps
        return self.start <= fraction < self.end


def warn_idle_units(units: list[AdapterUnit], total_steps: int) -> None:
    """One warning per adapter whose window holds none of this run's steps.

    With few steps (LCM/TCD: 2-8) the steps sit at coarse fractions (4 steps: 0, .25, .5, .75),
    so a window such as 0.3:0.45 that acts on 50 steps acts on none of 4; the run goes on (it is
    the no-adapter picture for that adapter), but not silently.
    """
    for unit in units:
        if not any(unit.is_active(step, total_steps) for step in range(total_steps)):
            fractions = ", ".join(f"{step / total_steps:g}" for step in range(min(total_steps, 8)))
            more = ", ..." if total_steps > 8 else ""
            logger.warning(
                "%s: its step range %g:%g holds none of the %d steps (at fractions %s%s); it does not act",
                unit.label,
                unit.start,
                unit.end,
                total_steps,
                fractions,
                more,
            )


@dataclass
class UnitOutput:
    """One unit's adapter output, already multiplied by its weight (batch 1)."""

    maps: list[torch.Tensor] | None = None  # spatial: one (1, C_l, H_l, W_l) per level
    tokens: torch.Tensor | None = None  # style: (1, T, D)


@dataclass
class StepInputs:
    """What the UNet gets at one step besides the latents."""

    context: torch.Tensor  # (B, L, D), B = 2 * batch with guidance (negative half first)
    residuals: list[torch.Tensor] | None  # per level (B, C_l, H_l, W_l), or None: no adapter now
    added_cond: dict[str, torch.Tensor] | None = None  # SDXL text_embeds + time_ids
    active: bool = False  # spatial features act at this step (zero residuals, see `fill_idle`, do not)


@dataclass
class StepConditioning:
    """Per-step UNet inputs from the adapter outputs, cached per set of active units."""

    units: list[AdapterUnit]
    outputs: list[UnitOutput]
    text_context: torch.Tensor  # (B, L, D)
    batch_size: int  # latents per guidance half
    do_cfg: bool
    fuser: torch.nn.Module | None = None
    added_cond: dict[str, torch.Tensor] | None = None
    # A compiled UNet: steps outside every window get zero residuals of the same shapes (the
    # same sum, x + 0 = x) instead of None, which would be a second graph to compile.
    fill_idle: bool = False
    _cache: dict[tuple[int, ...], StepInputs] = field(default_factory=dict, init=False, repr=False)

    def at(self, step: int, total_steps: int) -> StepInputs:
        active = tuple(i for i, unit in enumerate(self.units) if unit.is_active(step, total_steps))
        if active not in self._cache:
            self._cache[active] = self._combine(active)
        return self._cache[active]

    def _combine(self, active: tuple[int, ...]) -> StepInputs:
        maps, tokens = self._mix([self.units[i] for i in active], [self.outputs[i] for i in active])
        residuals = None
        if maps is not None:
            residuals = [self._to_batch(level) for level in maps]
        elif self.fill_idle:
            residuals = self._idle_residuals()
        context = self.text_context
        if tokens is not None:
            context = self._append_tokens(self._to_batch(tokens, guidance_halves=False))
        return StepInputs(
            context=context, residuals=residuals, added_cond=self.added_cond, active=maps is not None
        )

    def _idle_residuals(self) -> list[torch.Tensor] | None:
        """Zeros shaped like the residuals of the steps where adapters act (None without spatial ones)."""
        spatial = [i for i, output in enumerate(self.outputs) if output.maps is not None]
        if not spatial:
            return None
        maps, _ = self._mix([self.units[i] for i in spatial], [self.outputs[i] for i in spatial])
        return None if maps is None else [torch.zeros_like(self._to_batch(level)) for level in maps]

    def _mix(
        self, units: list[AdapterUnit], outputs: list[UnitOutput]
    ) -> tuple[list[torch.Tensor] | None, torch.Tensor | None]:
        if not units:
            return None, None
        if self.fuser is not None:
            features: dict[str, Any] = {}
            for unit, output in zip(units, outputs, strict=True):
                task = unit.task or unit.name
                if task in features:
                    raise ModelMismatchError(f"the CoAdapter fuser got condition '{task}' twice")
                features[task] = output.maps if output.maps is not None else output.tokens
            return self.fuser(features)
        maps: list[torch.Tensor] | None = None
        tokens: torch.Tensor | None = None
        for output in outputs:
            if output.maps is not None:
                maps = (
                    list(output.maps)
                    if maps is None
                    else [a + b for a, b in zip(maps, output.maps, strict=True)]
                )
            if output.tokens is not None:
                tokens = output.tokens if tokens is None else torch.cat([tokens, output.tokens], dim=1)
        return maps, tokens

    def _to_batch(self, tensor: torch.Tensor, guidance_halves: bool = True) -> torch.Tensor:
        """(1, ...) -> (batch, ...), and (2 * batch, ...) for both guidance halves when asked."""
        if tensor.shape[0] != self.batch_size:
            tensor = tensor.repeat(self.batch_size // tensor.shape[0], *([1] * (tensor.dim() - 1)))
        if guidance_halves and self.do_cfg:
            tensor = torch.cat([tensor, tensor])
        return tensor

    def _append_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Style tokens join the conditional half's context.

        The original implementation (`append_to_context` in its DDIM sampler) gives the
        unconditional half the same length by repeating its own last T tokens (padding-token
        states of the empty prompt), so the negative half is not steered by the style, and
        guidance pushes towards it.
        """
        tokens = tokens.to(self.text_context.dtype)
        if not self.do_cfg:
            return torch.cat([self.text_context, tokens], dim=1)
        negative, positive = self.text_context.chunk(2)
        length = tokens.shape[1]
        negative = torch.cat([negative, negative[:, -length:]], dim=1)
        positive = torch.cat([positive, tokens], dim=1)
        return torch.cat([negative, positive])
