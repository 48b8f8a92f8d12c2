"""Every parameter of a generation, as plain data: what the CLI parses, the web UI fills in and a
PNG records, so an image can be made again from the file alone (`generate --from-png`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from t2i_adapter.errors import T2IAdapterError

# The original release's negative prompt (its inference scripts' default).
ORIGINAL_NEGATIVE_PROMPT = (
    "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, "
    "worst quality, low quality"
)
DEFAULT_CLIP_VISION = "openai/clip-vit-large-patch14"
DTYPES = ("float32", "float16", "bfloat16")
DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}
SETTINGS_VERSION = 1


@dataclass
class AdapterSpec:
    """One adapter and its condition: `cond` is an image path (or None when given in memory).

    `cond_type` names the preprocessor that turns `cond` into the condition map (`none`: it is one
    already). `weight` multiplies the adapter's features; the adapter acts on the steps whose
    fraction `step / steps` lies in `[start, end)` (the original `cond_tau` is `end`). `task` names
    the condition for a CoAdapter fuser (defaults to `cond_type`). `cond_options` are the
    preprocessor's options (`model=` hub id or folder, `detect_resolution=`, `device=`, ...; see
    `t2i-adapter preprocess --list`); values given as text are converted to each option's type.
    """

    adapter: str
    cond: str | None = None
    cond_type: str = "none"
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    task: str | None = None
    cond_options: dict[str, str | int | float | bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cond_options = _checked_options(self.adapter, self.cond_options)
        self.weight = float(self.weight)
        self.start = float(self.start)
        self.end = float(self.end)
        if not 0.0 <= self.start <= 1.0 or not 0.0 <= self.end <= 1.0 or self.start > self.end:
            raise T2IAdapterError(
                f"adapter '{self.adapter}': range {self.start}:{self.end} must satisfy 0 <= start <= end <= 1"
            )


def _checked_options(adapter: str, options: Any) -> dict[str, str | int | float | bool]:
    """A copy of `options` if it maps option names to plain values (what JSON in a PNG can hold)."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise T2IAdapterError(
            f"adapter '{adapter}': condition options must be KEY=VALUE pairs, not {type(options).__name__}"
        )
    for key, value in options.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise T2IAdapterError(f"adapter '{adapter}': condition option name {key!r} is not a valid name")
        if not isinstance(value, str | int | float | bool):
            raise T2IAdapterError(
                f"adapter '{adapter}': condition option {key}={value!r} must be text, a number or true/false"
            )
    return dict(options)


@dataclass
class LoraSpec:
    """One LoRA: a local file or folder, or a hub id (`owner/repo` or `owner/repo/file.safetensors`),
    and the scale its weight deltas are applied with (0: off, 1: as trained)."""

    path: str
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path.strip():
            raise T2IAdapterError("a LoRA needs a file, folder or hub id")
        try:
            self.scale = float(self.scale)
        except (TypeError, ValueError):
            raise T2IAdapterError(f"LoRA '{self.path}': scale {self.scale!r} is not a number") from None

    @classmethod
    def parse(cls, text: str) -> LoraSpec:
        """`PATH_OR_HUB_ID[:SCALE]`: the part after the last ':' is the scale when it is a number."""
        path, separator, scale = text.rpartition(":")
        if separator and path:
            try:
                return cls(path, float(scale))
            except ValueError:
                pass  # a ':' that belongs to the path
        return cls(text)


@dataclass
class GenerationSettings:
    """All parameters of one generation run (defaults follow the original release's inference)."""

    model: str
    prompt: str
    adapters: list[AdapterSpec] = field(default_factory=list)
    negative_prompt: str = ""
    steps: int = 50
    guidance_scale: float = 7.5
    seed: int = 42
    num_images: int = 1
    width: int | None = None
    height: int | None = None
    resize_short_edge: int | None = None
    # None: the base model's native pixel count (512*512 for SD1.5, 1024*1024 for SDXL, 64*64 for
    # the demo). The original scripts always used 512*512, which suits SD1.x only.
    max_resolution: int | None = None
    scheduler: str = "ddim"
    loras: list[LoraSpec] = field(default_factory=list)
    # Single-file checkpoints: a diffusers config folder instead of the shipped one for the
    # detected architecture, and the noise prediction when detection cannot tell (SD2.x).
    model_config: str | None = None
    prediction_type: str | None = None
    fuser: str | None = None
    clip_vision: str = DEFAULT_CLIP_VISION
    dtype: str = "float32"
    device: str | None = None  # None: CUDA when available, else CPU
    attention_slicing: bool = False
    vae_tiling: bool = False
    cpu_offload: bool = False

    def __post_init__(self) -> None:
        self.adapters = [
            spec if isinstance(spec, AdapterSpec) else AdapterSpec(**spec) for spec in self.adapters
        ]
        self.loras = [spec if isinstance(spec, LoraSpec) else LoraSpec(**spec) for spec in self.loras]
        self.dtype = DTYPE_ALIASES.get(self.dtype, self.dtype)
        if self.dtype not in DTYPES:
            from t2i_adapter.errors import UnknownNameError

            raise UnknownNameError("dtype", self.dtype, [*DTYPES, *DTYPE_ALIASES])
        for name in ("steps", "num_images"):
            if int(getattr(self, name)) < 1:
                raise T2IAdapterError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("width", "height", "resize_short_edge", "max_resolution"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise T2IAdapterError(f"{name} must be at least 1, not {value}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data, with a format version so later releases can read old PNGs."""
        data = asdict(self)
        data["version"] = SETTINGS_VERSION
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationSettings:
        """Rebuild settings from `to_dict()` output; unknown keys (from newer versions) are ignored."""
        if not isinstance(data, dict) or "model" not in data or "prompt" not in data:
            raise T2IAdapterError("generation parameters need at least 'model' and 'prompt'")
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        spec_fields = {f.name for f in fields(AdapterSpec)}
        values["adapters"] = [
            AdapterSpec(**{key: value for key, value in spec.items() if key in spec_fields})
            for spec in data.get("adapters", [])
        ]
        lora_fields = {f.name for f in fields(LoraSpec)}
        values["loras"] = [
            LoraSpec(**{key: value for key, value in spec.items() if key in lora_fields})
            for spec in data.get("loras", [])
        ]
        return cls(**values)

    def replace(self, **changes: Any) -> GenerationSettings:
        data = asdict(self)
        data.update(changes)
        data["adapters"] = [s if isinstance(s, AdapterSpec) else AdapterSpec(**s) for s in data["adapters"]]
        data["loras"] = [s if isinstance(s, LoraSpec) else LoraSpec(**s) for s in data["loras"]]
        return GenerationSettings(**data)
