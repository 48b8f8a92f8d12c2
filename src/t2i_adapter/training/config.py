"""`TrainConfig`: every setting of a training run, one typed dataclass.

The same keys work in three places: as `train(TrainConfig(...))` arguments, as keys of a YAML or
TOML config file (`--config run.yaml`; dashes or underscores), and as CLI flags
(`--batch-size 4`). Precedence: dataclass defaults < config file < CLI flags.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib
import yaml

from t2i_adapter.adapters.kinds import SPATIAL_KINDS
from t2i_adapter.conditions.options import parse_bool, parse_options
from t2i_adapter.errors import InputFileError, T2IAdapterError, UnknownNameError, first_line

DATA_FORMATS = ("auto", "meta", "folder", "jsonl", "webdataset", "hf")
TIMESTEP_SAMPLINGS = ("auto", "uniform", "cubic")
MIXED_PRECISIONS = ("no", "fp16", "bf16")
OPTIMIZERS = ("auto", "adamw", "adamw8bit")
CHECKPOINTING = ("auto", "on", "off")
LR_SCHEDULERS = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
)


def _option(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field whose CLI help text travels with it (see `interfaces/cli/train.py`)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class TrainConfig:
    """Settings of one adapter training run (see docs/training.md for each key)."""

    # --- what to train on --------------------------------------------------------------------
    model: str = _option("", "base model: hub id, diffusers folder, single file, or 'demo'")
    vae: str | None = _option(
        None,
        "another VAE instead of the model's (a diffusers VAE folder, hub id, or .safetensors/.ckpt/.pt "
        "file): it encodes the training pictures and decodes validation images",
    )
    data: str = _option(
        "", "dataset: meta file, folder, JSONL manifest, .tar shards, or a datasets folder / hf:<name>"
    )
    output_dir: str = _option("", "where checkpoints, logs and the final adapter go")
    data_format: str = _option("auto", "dataset format (auto detects it from the path)", choices=DATA_FORMATS)
    cond_type: str | None = _option(
        None,
        "condition name: the <stem>.<cond_type>.png files beside each image, or a registered "
        "preprocessor computing the condition from the image when there are none",
    )
    cond_options: list[str] = _option(
        [],
        "KEY=VALUE options of the preprocessor computing the condition (model=..., detect_resolution=...)",
    )
    condition_channels: int | None = _option(
        None, "adapter input channels (default: from the preprocessor or the data)"
    )
    image_column: str = _option("image", "Hugging Face datasets: image column")
    condition_column: str = _option("conditioning_image", "Hugging Face datasets: condition column")
    caption_column: str = _option("text", "Hugging Face datasets: caption column")

    # --- the adapter -------------------------------------------------------------------------
    adapter_type: str | None = _option(
        None, "new adapter kind (default: xl for SDXL, else full)", choices=SPATIAL_KINDS
    )
    adapter: str | None = _option(None, "fine-tune from this adapter checkpoint instead of a new one")

    # --- images ------------------------------------------------------------------------------
    resolution: int = _option(512, "training size in pixels (square; a multiple of 64)")
    center_crop: bool = _option(True, "crop the centre after resizing (else a random crop)")
    random_flip: bool = _option(False, "flip image and condition horizontally at random")

    # --- optimisation ------------------------------------------------------------------------
    batch_size: int = _option(8, "samples per process per micro-batch")
    gradient_accumulation_steps: int = _option(1, "micro-batches per optimizer step")
    lr: float = _option(1e-5, "peak learning rate")
    lr_scheduler: str = _option("constant_with_warmup", "learning-rate schedule", choices=LR_SCHEDULERS)
    lr_warmup_steps: int = _option(100, "linear warmup steps")
    optimizer: str = _option(
        "auto", "adamw, adamw8bit (bitsandbytes), or auto (8-bit on CUDA when installed)", choices=OPTIMIZERS
    )
    adam_beta1: float = _option(0.9, "AdamW beta1")
    adam_beta2: float = _option(0.999, "AdamW beta2")
    adam_epsilon: float = _option(1e-8, "AdamW epsilon")
    weight_decay: float = _option(1e-2, "AdamW weight decay")
    max_grad_norm: float = _option(1.0, "gradient clipping norm (0 disables)")
    max_steps: int = _option(1000, "optimizer steps to train for (a resumed run continues up to this)")
    seed: int = _option(0, "seed of data order, noise, timesteps and caption dropout")
    timestep_sampling: str = _option(
        "auto",
        "uniform, or cubic t=(1-u^3)T (favours noisy steps; auto: cubic for SDXL)",
        choices=TIMESTEP_SAMPLINGS,
    )
    caption_dropout: float = _option(0.05, "probability of training on the empty caption (for guidance)")
    mixed_precision: str = _option(
        "no", "no, fp16 or bf16 (frozen models in that dtype, autocast)", choices=MIXED_PRECISIONS
    )
    gradient_checkpointing: str = _option(
        "auto",
        "recompute UNet activations in the backward pass: less memory, a slower step; auto: on only "
        "when the batch would not fit without it (off on the CPU)",
        choices=CHECKPOINTING,
        const="on",  # a bare --gradient-checkpointing (and true in a config file) is on
    )
    compile: bool = _option(
        False, "torch.compile the frozen UNet and the adapter (eager, with a warning, where unsupported)"
    )

    # --- data loading and caching ------------------------------------------------------------
    cache_latents: bool = _option(
        False, "encode images and captions once, then free the VAE and text encoders"
    )
    cache_dir: str | None = _option(None, "where the latent cache goes (default: <output_dir>/cache)")
    num_workers: int = _option(0, "data-loading worker processes")
    strict: bool = _option(False, "fail on any bad sample instead of skipping it")

    # --- checkpoints, logs, validation -------------------------------------------------------
    checkpoint_every: int = _option(500, "save a checkpoint every N steps (0: only at the end)")
    keep_checkpoints: int = _option(3, "how many checkpoints to keep")
    resume: bool = _option(False, "continue from the latest checkpoint in output_dir")
    save_original_layout: bool = _option(False, "also write the adapter with the original repository's keys")
    log_every: int = _option(10, "log loss and learning rate every N steps")
    validation_every: int = _option(0, "make validation images every N steps (0: never)")
    validation_prompts: list[str] = _option([], "prompts for validation images (default: dataset captions)")
    validation_conditions: list[str] = _option(
        [], "condition images for validation (default: dataset conditions)"
    )
    validation_steps: int = _option(20, "denoising steps of each validation image")
    eval_every: int = _option(
        0, "score the adapter with the evaluation protocol every N steps, logged to TensorBoard (0: never)"
    )
    eval_data: str | None = _option(None, "dataset to evaluate on, any training format (default: --data)")
    eval_num: int = _option(16, "samples scored at each evaluation")
    eval_metrics: list[str] = _option([], "metrics (default: the condition type's; see t2i-adapter evaluate)")
    eval_steps: int = _option(20, "denoising steps of each evaluation picture")
    progress: bool = _option(True, "show a progress bar")

    # -----------------------------------------------------------------------------------------

    def validate(self) -> TrainConfig:
        """Raise a one-line `T2IAdapterError` for a missing or impossible setting; return self."""
        for name in ("model", "data", "output_dir"):
            if not getattr(self, name):
                raise T2IAdapterError(
                    f"training needs '{name}' (--{name.replace('_', '-')} or the config file)"
                )
        self.gradient_checkpointing = _to_switch(self.gradient_checkpointing)
        choices = {f.name: f.metadata.get("choices") for f in dataclasses.fields(self)}
        for name, valid in choices.items():
            value = getattr(self, name)
            if valid and value is not None and value not in valid:
                raise UnknownNameError(name.replace("_", " "), str(value), valid)
        self._check_ranges()
        return self

    def _check_ranges(self) -> None:
        for name in POSITIVE_COUNTS:
            if getattr(self, name) < 1:
                raise T2IAdapterError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in NON_NEGATIVE_COUNTS:
            if getattr(self, name) < 0:
                raise T2IAdapterError(f"{name} must not be negative, not {getattr(self, name)}")
        if self.resolution <= 0 or self.resolution % 64:
            raise T2IAdapterError(f"resolution must be a positive multiple of 64, not {self.resolution}")
        if not 0.0 <= self.caption_dropout <= 1.0:
            raise T2IAdapterError(f"caption_dropout must be in [0, 1], not {self.caption_dropout}")
        if self.lr <= 0:
            raise T2IAdapterError(f"lr must be positive, not {self.lr}")
        parse_options(self.cond_options, what="cond_options")
        if self.condition_channels not in (None, 1, 3):
            raise T2IAdapterError(f"condition_channels must be 1 or 3, not {self.condition_channels}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_overrides(self, overrides: dict[str, Any]) -> TrainConfig:
        """A copy with `overrides` (keys with dashes or underscores) applied and type-checked."""
        values = self.to_dict()
        values.update(_normalise_keys(overrides, source="overrides"))
        return TrainConfig(**{name: _coerce(name, value, "overrides") for name, value in values.items()})

    @classmethod
    def from_file(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """Read a YAML (.yaml/.yml), TOML (.toml) or JSON config file, then apply `overrides`."""
        file = Path(path)
        if not file.is_file():
            raise InputFileError(file, "no such config file")
        text = file.read_text(encoding="utf-8")
        try:
            if file.suffix == ".toml":
                values = tomllib.loads(text)
            elif file.suffix == ".json":
                values = json.loads(text)
            else:
                values = yaml.safe_load(text) or {}
        except (tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError) as error:
            raise InputFileError(file, f"not a valid config file: {first_line(error)}") from None
        if not isinstance(values, dict):
            raise InputFileError(file, "a config file must hold key: value pairs at its top level")
        values = _normalise_keys(values, source=str(file))
        config = cls(**{name: _coerce(name, value, str(file)) for name, value in values.items()})
        return config.with_overrides(overrides or {})


POSITIVE_COUNTS = (
    "batch_size",
    "gradient_accumulation_steps",
    "max_steps",
    "keep_checkpoints",
    "validation_steps",
)
NON_NEGATIVE_COUNTS = (
    "checkpoint_every",
    "log_every",
    "validation_every",
    "eval_every",
    "num_workers",
    "lr_warmup_steps",
)
FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(TrainConfig)}


def _normalise_keys(values: dict[str, Any], *, source: str) -> dict[str, Any]:
    result = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in FIELD_TYPES:
            raise UnknownNameError(f"training setting (in {source})", str(key), FIELD_TYPES)
        result[name] = value
    return result


def _coerce(name: str, value: Any, source: str) -> Any:
    """Check (and gently convert: 1 -> 1.0, "1e-4" -> 0.0001) a value against the field's type."""
    kind = FIELD_TYPES[name]
    if value is None:
        if "None" in kind:
            return None
        raise T2IAdapterError(f"{source}: '{name}' cannot be empty")
    convert = next((rule for prefix, rule in _CONVERTERS.items() if kind.startswith(prefix)), str)
    try:
        return convert(value)
    except (TypeError, ValueError):
        raise T2IAdapterError(f"{source}: '{name}' must be {kind.split(' ')[0]}, not {value!r}") from None


def _to_bool(value: Any) -> bool:
    if isinstance(value, str) and parse_bool(value) is not None:
        return parse_bool(value)
    if not isinstance(value, bool):
        raise ValueError(value)
    return value


def _to_switch(value: Any) -> Any:
    """`auto|on|off` settings that were booleans (older config files, `gradient_checkpointing=True`)."""
    word = parse_bool(value) if isinstance(value, str) else value
    if isinstance(word, bool):
        return "on" if word else "off"
    return value


def _to_int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(value)
    return int(value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(value)
    return float(value)


def _to_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list | tuple):
        raise ValueError(value)
    return [str(item) for item in value]


_CONVERTERS = {"bool": _to_bool, "int": _to_int, "float": _to_float, "list": _to_list}
