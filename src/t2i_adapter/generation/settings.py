"""Every parameter of a generation, as plain data: what the CLI parses, the web UI fills in and a
PNG records, so an image can be made again from the file alone (`generate --from-png`)."""

from __future__ import annotations

import math
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from typing import Any

from t2i_adapter.conditions.style import DEFAULT_CLIP_VISION
from t2i_adapter.devices import check_device_name
from t2i_adapter.errors import T2IAdapterError, UnknownNameError

# The original release's negative prompt (its inference scripts' default).
ORIGINAL_NEGATIVE_PROMPT = (
    "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, "
    "worst quality, low quality"
)
DTYPES = ("float32", "float16", "bfloat16")
DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}
SETTINGS_VERSION = 1
# Bounds that keep one run finite: the schedulers' 1000 training timesteps, what
# `torch.Generator.manual_seed` takes, and an output size (width x height x images) that a
# typo such as width=100000 cannot turn into minutes of work and gigabytes of memory.
MAX_STEPS = 1000
MAX_SEED = 2**64 - 1
MAX_SIDE = 8192
MAX_IMAGES = 64
MAX_OUTPUT_PIXELS = 16 * 1024 * 1024
# img2img / inpainting / hires fix: a blur wider than this is no longer a seam, and an upscale
# beyond this runs past MAX_SIDE from any native size.
MAX_MASK_BLUR = 256
MAX_HIRES_SCALE = 8.0
# 'latent': the latents are upscaled (bicubic, like A1111's "Latent (bicubic)"); the others are
# Pillow resamplers of the decoded picture.
HIRES_UPSCALERS = ("latent", "lanczos", "bicubic", "bilinear", "nearest")
_KINDS = {"str": "text", "int": "a whole number", "float": "a number", "bool": "true or false"}


def check_step_window(start: float, end: float, who: str) -> None:
    """The one rule for an adapter's step window: `0 <= start < end <= 1`, else a one-line error.

    The adapter acts on the steps whose fraction `step / steps` lies in `[start, end)`, so a
    window with `start == end` would never act: it is refused rather than silently ignored.
    `who` names the adapter in the message (`adapter 'demo:sketch'`, `unit 2`).
    """
    if not 0.0 <= start < end <= 1.0:
        why = "; a window with start == end never acts" if start == end else ""
        raise T2IAdapterError(f"{who}: step range {start}:{end} must satisfy 0 <= start < end <= 1{why}")


def _option(default: Any = MISSING, help: str = "", **cli: Any) -> Any:
    """A dataclass field whose help text (and, for `generate`, flag name, metavar and help group)
    travels with it: the CLI's flags are made from these fields (see `interfaces/cli/generate.py`).
    `minimum`/`maximum` bound a number field; `check_fields` enforces them and the field's type."""
    metadata = {"help": help, **cli}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


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

    adapter: str = _option(help="adapter: hub id, folder, file, demo:<name>", flag="adapter")
    cond: str | None = _option(None, "condition image", flag="cond", metavar="IMAGE")
    cond_type: str = _option(
        "none",
        "preprocessor that makes the condition map: canny, sketch, color, depth, ...; 'none': it is one",
        flag="cond-type",
        metavar="TYPE",
    )
    weight: float = _option(1.0, "feature weight", flag="adapter-weight", metavar="W")
    start: float = _option(
        0.0,
        "fraction of the steps the adapter acts on; the original cond_tau T is 0:T",
        flag="adapter-range",
        metavar="START:END",
    )
    end: float = _option(1.0, "where the adapter's fraction of the steps ends (see start)")
    task: str | None = _option(
        None,
        "condition name for a CoAdapter fuser (sketch, depth, color, style, ...; default: the condition type)",
        flag="adapter-task",
        metavar="NAME",
    )
    cond_options: dict[str, str | int | float | bool] = _option(
        {},
        "the preprocessor's options, e.g. detect_resolution=384 (see 't2i-adapter preprocess --list')",
        flag="cond-option",
        metavar="KEY=VALUE",
    )

    def __post_init__(self) -> None:
        if not isinstance(self.adapter, str) or not self.adapter.strip():
            raise T2IAdapterError(
                f"an adapter must be named by text (hub id, folder, file), not {_shown(self.adapter)}"
            )
        check_fields(self, f"adapter '{self.adapter}': ")
        self.cond_options = _checked_options(self.adapter, self.cond_options)
        check_step_window(self.start, self.end, f"adapter '{self.adapter}'")


def check_fields(settings: Any, prefix: str = "") -> None:
    """The one type-and-range check of a settings dataclass (`GenerationSettings`, `AdapterSpec`):
    every plain field must hold its annotated type (`int`, `float`, `str`, `bool`, `| None`) within
    its metadata's `minimum`/`maximum`; whole-number floats become ints and ints floats. Values read
    from a PNG or a jobs line are untrusted, so a wrong one is one line naming the field."""
    for spec in fields(settings):
        kind = str(spec.type)
        if kind.removesuffix(" | None") in _KINDS:
            setattr(settings, spec.name, _checked_value(spec, getattr(settings, spec.name), prefix))


def _checked_value(spec: Field, value: Any, prefix: str) -> Any:
    base = str(spec.type).removesuffix(" | None")
    if value is None and base != str(spec.type):
        return None
    checked = _as_kind(base, value)
    if checked is None or not _in_range(checked, spec.metadata):
        raise T2IAdapterError(
            f"{prefix}{spec.name} must be {_KINDS[base]}{_bounds(spec.metadata)}, not {_shown(value)}"
        )
    choices = spec.metadata.get("choices")
    if choices and checked not in choices:
        raise UnknownNameError(spec.name, checked, choices)
    return checked


def _in_range(value: Any, metadata: Any) -> bool:
    """Within the field's `minimum` (exclusive with `above_minimum`) and `maximum`."""
    low, high = metadata.get("minimum"), metadata.get("maximum")
    if low is not None and (value <= low if metadata.get("above_minimum") else value < low):
        return False
    return high is None or value <= high


def _bounds(metadata: Any) -> str:
    """The range as a message says it: ` from 1 to 1000`, ` above 0 up to 1`, ` of at least 0`."""
    low, high = metadata.get("minimum"), metadata.get("maximum")
    if low is None:
        return ""
    if metadata.get("above_minimum"):
        return f" above {low:g}" + (f" up to {high:g}" if high is not None else "")
    return f" from {low} to {high}" if high is not None else f" of at least {low}"


def _as_kind(kind: str, value: Any) -> Any:
    """`value` as `kind` (a whole-number float as an int, an int as a float), None if it is not one."""
    if isinstance(value, bool) or kind == "bool":
        return value if kind == "bool" and isinstance(value, bool) else None
    if kind == "str":
        return value if isinstance(value, str) else None
    if not isinstance(value, int | float) or not math.isfinite(value):
        return None
    if kind == "float":
        return float(value)
    return int(value) if isinstance(value, int) or value.is_integer() else None


def _shown(value: Any) -> str:
    """A value as a message shows it: its repr, cut short (a record may hold a huge one)."""
    text = "null" if value is None else repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


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
    """All parameters of one generation run (defaults follow the original release's inference).

    Each field's help text and help group travel with it: `generate`'s flags are these fields."""

    model: str = _option(
        help="base model: hub id, diffusers folder, .safetensors file, or 'demo'", group="what to generate"
    )
    prompt: str = _option(help="text prompt", metavar="TEXT", group="what to generate")
    adapters: list[AdapterSpec] = _option(
        [], "the adapters, each with its condition (AdapterSpec), in order", group="adapters"
    )
    negative_prompt: str = _option(
        "", "what to steer away from (empty: nothing)", metavar="TEXT", group="what to generate"
    )

    steps: int = _option(50, "denoising steps", metavar="N", group="sampling", minimum=1, maximum=MAX_STEPS)
    guidance_scale: float = _option(7.5, "classifier-free guidance scale", metavar="SCALE", group="sampling")
    seed: int = _option(42, "random seed", metavar="N", group="sampling", minimum=0, maximum=MAX_SEED)
    num_images: int = _option(
        1, "images to generate", metavar="N", group="sampling", minimum=1, maximum=MAX_IMAGES
    )

    width: int | None = _option(
        None,
        "output width (rounded to what the model needs)",
        metavar="PIXELS",
        group="size",
        minimum=1,
        maximum=MAX_SIDE,
    )
    height: int | None = _option(
        None,
        "output height (rounded to what the model needs)",
        metavar="PIXELS",
        group="size",
        minimum=1,
        maximum=MAX_SIDE,
    )
    resize_short_edge: int | None = _option(
        None, "scale the condition's short edge to N", metavar="N", group="size", minimum=1, maximum=MAX_SIDE
    )
    # The original scripts always used 512*512, which suits SD1.x only.
    max_resolution: int | None = _option(
        None,
        "pixel budget (default: the model's native one: 512*512 for SD1.5, 1024*1024 for SDXL, "
        "64*64 for the demo)",
        metavar="PIXELS",
        group="size",
        minimum=1,
        maximum=MAX_OUTPUT_PIXELS,
    )

    scheduler: str = _option(
        "ddim",
        "euler, euler_a, dpm++_2m, unipc, lcm, tcd, ddim_trailing, euler_trailing, ... or a diffusers class",
        metavar="NAME",
        group="sampling",
    )
    eta: float | None = _option(
        None,
        "the scheduler's step noise: DDIM's eta, TCD's gamma (default: the scheduler's own, DDIM 0, TCD 0.3)",
        metavar="ETA",
        group="sampling",
        minimum=0.0,
        maximum=1.0,
    )
    loras: list[LoraSpec] = _option(
        [],
        "a LoRA (kohya/A1111 or diffusers file, folder or hub id) and its scale (1.0); repeat for several",
        flag="lora",
        metavar="PATH_OR_HUB_ID[:SCALE]",
        group="what to generate",
    )
    vae: str | None = _option(
        None,
        "another VAE instead of the model's: a diffusers VAE folder, a hub id (stabilityai/sd-vae-ft-mse) "
        "or a .safetensors/.ckpt/.pt file",
        metavar="PATH_OR_HUB_ID",
        group="what to generate",
    )
    # Single-file checkpoints: a diffusers config folder instead of the shipped one for the
    # detected architecture, and the noise prediction when detection cannot tell (SD2.x).
    model_config: str | None = _option(
        None,
        "single-file --model only: diffusers config folder to use instead of the shipped one",
        metavar="FOLDER",
        group="what to generate",
    )
    prediction_type: str | None = _option(
        None,
        "what the model predicts, when detection (SD2.x single files) or its config is wrong",
        choices=("epsilon", "v_prediction"),
        group="what to generate",
    )
    # img2img and inpainting: a picture to rework (and the part of it to repaint)
    init_image: str | None = _option(
        None,
        "img2img: the picture to rework (resized like a condition; it sets the size when given)",
        metavar="PIC",
        group="img2img and inpainting",
    )
    strength: float = _option(
        0.75,
        "img2img: how much of the schedule re-runs (0 < S <= 1; 1: the picture only sets the size)",
        metavar="S",
        group="img2img and inpainting",
        minimum=0.0,
        maximum=1.0,
        above_minimum=True,
    )
    mask: str | None = _option(
        None,
        "inpainting: white is repainted, black kept (needs --init-image)",
        metavar="MASK",
        group="img2img and inpainting",
    )
    mask_blur: int = _option(
        4,
        "inpainting: blur radius of the mask's edge, in pixels (0: a hard seam)",
        metavar="N",
        group="img2img and inpainting",
        minimum=0,
        maximum=MAX_MASK_BLUR,
    )
    inpaint_full_res: bool = _option(
        False,
        "inpainting: repaint only the masked region, cropped and worked at the full output size",
        group="img2img and inpainting",
    )
    inpaint_full_res_padding: int = _option(
        32,
        "inpainting with --inpaint-full-res: pixels of context kept around the masked region",
        metavar="PIXELS",
        group="img2img and inpainting",
        minimum=0,
        maximum=MAX_SIDE,
    )
    # hires fix: generate, upscale, then an img2img pass at the larger size
    hires_scale: float | None = _option(
        None,
        "hires fix: upscale the result by F and repaint it with an img2img pass (e.g. 2)",
        metavar="F",
        group="hires fix",
        minimum=1.0,
        maximum=MAX_HIRES_SCALE,
    )
    hires_strength: float = _option(
        0.5,
        "hires fix: strength of the second pass (0 < S <= 1)",
        metavar="S",
        group="hires fix",
        minimum=0.0,
        maximum=1.0,
        above_minimum=True,
    )
    hires_steps: int | None = _option(
        None,
        "hires fix: steps of the second pass's schedule (default: --steps)",
        metavar="N",
        group="hires fix",
        minimum=1,
        maximum=MAX_STEPS,
    )
    hires_upscaler: str = _option(
        "latent",
        "hires fix: 'latent' (upscale the latents) or a plain resampler of the picture",
        choices=HIRES_UPSCALERS,
        metavar="NAME",
        group="hires fix",
    )
    fuser: str | None = _option(None, "CoAdapter fuser that mixes the adapters' features", group="adapters")
    clip_vision: str = _option(
        DEFAULT_CLIP_VISION, "CLIP vision model for style adapters", metavar="MODEL", group="adapters"
    )

    dtype: str = _option(
        "float32",
        f"{', '.join(DTYPES)} (or {', '.join(DTYPE_ALIASES)})",
        group="machine and memory",
    )
    device: str | None = _option(
        None, "cpu, cuda, cuda:N, mps (default: CUDA, then MPS, then CPU)", group="machine and memory"
    )
    attention_slicing: bool = _option(False, "less memory, slower", group="machine and memory")
    vae_tiling: bool = _option(False, "decode in tiles (large images)", group="machine and memory")
    cpu_offload: bool = _option(
        False, "keep models on the CPU until used (small GPUs)", group="machine and memory"
    )
    # Recorded, but the image does not depend on it (same pixels within fp16 rounding), so a PNG
    # made with it reproduces without it and one made without it reproduces with it.
    compile: bool = _option(
        False,
        "torch.compile the UNet (CUDA graphs on CUDA); the first generation of a size compiles, later ones "
        "are faster; eager with a warning where compile cannot run",
        group="machine and memory",
    )

    def __post_init__(self) -> None:
        for name in ("adapters", "loras"):
            if not isinstance(getattr(self, name), list | tuple):
                raise T2IAdapterError(f"{name} must be a list of objects, not {_shown(getattr(self, name))}")
        self.adapters = [
            spec if isinstance(spec, AdapterSpec) else AdapterSpec(**spec) for spec in self.adapters
        ]
        self.loras = [spec if isinstance(spec, LoraSpec) else LoraSpec(**spec) for spec in self.loras]
        self.dtype = DTYPE_ALIASES.get(self.dtype, self.dtype)
        if self.dtype not in DTYPES:
            raise UnknownNameError("dtype", self.dtype, [*DTYPES, *DTYPE_ALIASES])
        check_fields(self)
        if self.vae is not None and not self.vae.strip():
            self.vae = None  # an empty name (a cleared form field, a jobs line's "") is the model's own
        check_device_name(self.device)
        self._check_picture_fields()
        # A side left out follows the condition's aspect within max_resolution: counted as 1 here.
        if (self.width or 1) * (self.height or 1) * self.num_images > MAX_OUTPUT_PIXELS:
            raise T2IAdapterError(
                f"width x height x num_images = {self.width} x {self.height} x {self.num_images} is over the "
                f"limit of {MAX_OUTPUT_PIXELS} pixels per run; make fewer or smaller images"
            )

    def _check_picture_fields(self) -> None:
        """The img2img / inpainting / hires fields that only make sense together."""
        for name in ("init_image", "mask"):
            if getattr(self, name) is not None and not getattr(self, name).strip():
                setattr(self, name, None)  # an empty path (a cleared form field) is no picture
        if self.mask is not None and self.init_image is None:
            raise T2IAdapterError("--mask needs --init-image: the picture whose white part is repainted")
        if self.inpaint_full_res and self.mask is None:
            raise T2IAdapterError("--inpaint-full-res needs --mask (and --init-image)")
        if self.hires_scale is not None and self.mask is not None:
            raise T2IAdapterError(
                "--hires-scale does not go with --mask: inpaint at the size you want instead"
            )

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
        values["adapters"] = _specs(AdapterSpec, data.get("adapters", []), "adapters")
        values["loras"] = _specs(LoraSpec, data.get("loras", []), "loras")
        return cls(**values)

    def replace(self, **changes: Any) -> GenerationSettings:
        data = asdict(self)
        data.update(changes)
        data["adapters"] = [s if isinstance(s, AdapterSpec) else AdapterSpec(**s) for s in data["adapters"]]
        data["loras"] = [s if isinstance(s, LoraSpec) else LoraSpec(**s) for s in data["loras"]]
        return GenerationSettings(**data)


def _specs(kind: type, entries: Any, name: str) -> list:
    """`AdapterSpec`s or `LoraSpec`s from a record's list of objects (unknown keys ignored)."""
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise T2IAdapterError(f"{name} must be a list of objects, not {_shown(entries)}")
    known = {spec.name for spec in fields(kind)}
    required = [
        spec.name for spec in fields(kind) if spec.default is MISSING and spec.default_factory is MISSING
    ]
    for entry in entries:
        if any(key not in entry for key in required):
            raise T2IAdapterError(f"each of {name} needs {', '.join(repr(key) for key in required)}")
    return [kind(**{key: value for key, value in entry.items() if key in known}) for entry in entries]
