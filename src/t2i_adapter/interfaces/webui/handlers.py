"""What the web page does, as plain functions: no Gradio components, so tests call them directly.

The page (`app.py`) only wires components to these functions. Each one takes plain values
(file paths, PIL images, numbers), calls the same library functions as the CLI (`load_image`,
`preprocess`, `generate`, `save_png`, `read_png_parameters`), and raises `T2IAdapterError`
with a one-line message for anything the user caused; `app.py` turns those into `gr.Error`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from t2i_adapter.conditions.options import format_option_text, parse_option_text
from t2i_adapter.conditions.registry import preprocess
from t2i_adapter.errors import InputFileError, T2IAdapterError
from t2i_adapter.generation.settings import AdapterSpec, GenerationSettings
from t2i_adapter.io.images import load_image, normalize_image
from t2i_adapter.io.png import read_png_parameters, save_png

MAX_UNITS = 4
MAX_SEED = 2**32 - 1
SOURCE_UPLOAD = "upload"
SOURCE_SKETCH = "sketch"

# A progress reporter as Gradio's `gr.Progress` is called: (fraction in [0, 1], description).
ProgressFn = Callable[[float, str], Any]


@dataclass
class UnitInput:
    """One adapter unit as the page holds it: which adapter, which picture, how strongly, when."""

    enabled: bool = False
    adapter: str = ""
    source: str = SOURCE_UPLOAD  # which tab the picture comes from: "upload" or "sketch"
    upload_path: str | None = None
    sketch: Any = None  # gr.Sketchpad value: {"background", "layers", "composite"} or a PIL image
    cond_type: str = "none"
    cond_options: str = ""  # the preprocessor's options as typed: "key=value, key=value"
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0


@dataclass
class PageInput:
    """What the page holds for one Generate click: `GenerationSettings` fields as its components
    give them (an empty seed box is None: a fresh seed; no scheduler: the default) and the units."""

    prompt: str | None
    negative_prompt: str | None
    steps: float
    guidance_scale: float
    seed: float | None
    width: float
    height: float
    num_images: float
    scheduler: str | None = None
    units: list[UnitInput] = field(default_factory=list)


@dataclass
class Limits:
    """What one upload may be: bytes on disk and decoded pixels (decompression bombs)."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 64 * 1024 * 1024


@dataclass
class GenerationOutput:
    """What one Generate click produced: PNG paths (parameters embedded) and a status line."""

    paths: list[Path] = field(default_factory=list)
    status: str = ""
    settings: GenerationSettings | None = None


# ---------------------------------------------------------------------------------------------
# Condition pictures
# ---------------------------------------------------------------------------------------------


def sketch_image(sketch: Any) -> Image.Image | None:
    """The drawing on a sketchpad (its flattened composite), or None if nothing was drawn."""
    if sketch is None:
        return None
    image = sketch.get("composite") if isinstance(sketch, dict) else sketch
    if image is None:
        return None
    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    image = normalize_image(image, mode="RGB")
    # An untouched canvas is one flat colour: treat it as "no sketch" rather than a blank condition.
    low, high = image.convert("L").getextrema()
    return None if low == high else image


def source_image(
    source: str, upload_path: str | None, sketch: Any, limits: Limits, *, unit: int = 1
) -> Image.Image:
    """The picture a unit's condition is made from: the uploaded file or the drawn sketch."""
    if source == SOURCE_SKETCH:
        image = sketch_image(sketch)
        if image is None:
            raise T2IAdapterError(f"unit {unit}: the sketch is empty; draw something or upload an image")
        return image
    if not upload_path:
        raise T2IAdapterError(f"unit {unit}: no condition image; upload one or draw a sketch")
    try:
        return load_image(upload_path, max_bytes=limits.max_bytes, max_pixels=limits.max_pixels)
    except InputFileError as error:
        # Gradio stores uploads under a random temporary path: name the file the user knows.
        raise InputFileError(Path(upload_path).name, error.problem) from None


def parse_cond_options(text: str | None) -> dict[str, str]:
    """The page's options field (`"low_threshold=50, high_threshold=150"`, commas or new lines) as
    text values, by the conditions layer's one KEY=VALUE parser; the registry types them."""
    return parse_option_text(text, what="preprocessor option")


def preview_condition(
    source: str,
    upload_path: str | None,
    sketch: Any,
    cond_type: str,
    limits: Limits,
    cond_options: str = "",
) -> tuple[Image.Image | None, Image.Image | None]:
    """(input picture, condition made from it by `cond_type` with `cond_options`), or (None, None)
    if there is no picture."""
    if source == SOURCE_SKETCH:
        picture = sketch_image(sketch)
    elif upload_path:
        picture = source_image(source, upload_path, sketch, limits)
    else:
        picture = None
    if picture is None:
        return None, None
    return picture, preprocess(cond_type or "none", picture, **parse_cond_options(cond_options))


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------


def random_seed() -> int:
    """A fresh seed for the seed box's dice button."""
    return random.SystemRandom().randint(0, MAX_SEED)


def check_units(units: list[UnitInput]) -> list[AdapterSpec]:
    """The enabled units' `AdapterSpec`s (no condition yet): what cannot work is refused with one
    line naming the unit, before any model is loaded."""
    specs = []
    for number, unit in enumerate(units, start=1):
        if not unit.enabled:
            continue
        if not unit.adapter.strip():
            raise T2IAdapterError(f"unit {number}: choose an adapter (a demo name, a folder or a hub id)")
        try:
            spec = AdapterSpec(
                adapter=unit.adapter.strip(),
                cond_type=unit.cond_type or "none",
                cond_options=parse_cond_options(unit.cond_options),
                weight=unit.weight,
                start=unit.start,
                end=unit.end,
            )
        except T2IAdapterError as error:
            raise T2IAdapterError(f"unit {number}: {error}") from None
        specs.append(spec)
    return specs


def build_settings(
    page: PageInput, *, model: str, condition_paths: list[str], compile: bool = False
) -> GenerationSettings:
    """A `GenerationSettings` from the page; `condition_paths` names each enabled unit's picture;
    `compile` is the server's (`serve --compile`)."""
    adapters = [
        replace(spec, cond=path) for spec, path in zip(check_units(page.units), condition_paths, strict=True)
    ]
    extra = {"scheduler": page.scheduler} if page.scheduler else {}
    return GenerationSettings(
        model=model,
        prompt=page.prompt or "",
        negative_prompt=page.negative_prompt or "",
        adapters=adapters,
        steps=int(page.steps),
        guidance_scale=float(page.guidance_scale),
        seed=random_seed() if page.seed is None or int(page.seed) < 0 else int(page.seed),  # empty box
        num_images=int(page.num_images),
        width=int(page.width),
        height=int(page.height),
        compile=compile,
        **extra,
    )


def run_generation(
    page: PageInput,
    *,
    model: str,
    cache: Any,
    output_dir: Path,
    limits: Limits,
    progress: ProgressFn | None = None,
    compile: bool = False,
) -> GenerationOutput:
    """Generate with the enabled units; save each image as a PNG with its parameters in `output_dir`.

    Each unit's picture is kept next to the outputs, so the PNG's parameters name a real file and
    loading them back in this page can restore the condition too."""
    from t2i_adapter.generation.api import generate

    run_dir = Path(output_dir) / time.strftime("%Y%m%d-%H%M%S") / f"{random.getrandbits(32):08x}"
    numbers = [number for number, unit in enumerate(page.units, start=1) if unit.enabled]
    condition_paths = [run_dir / f"condition-{number}.png" for number in numbers]
    settings = build_settings(
        page, model=model, condition_paths=[str(path) for path in condition_paths], compile=compile
    )
    pictures = [
        source_image(unit.source, unit.upload_path, unit.sketch, limits, unit=number)
        for number, unit in enumerate(page.units, start=1)
        if unit.enabled
    ]
    run_dir.mkdir(parents=True, exist_ok=True)
    for picture, path in zip(pictures, condition_paths, strict=True):
        save_png(picture, path)
    callback = _progress_callback(progress) if progress is not None else None
    started = time.monotonic()
    result = generate(settings, condition_images=pictures or None, cache=cache, progress=callback)
    return _saved_outputs(result.settings or settings, result.images, run_dir, time.monotonic() - started)


def _saved_outputs(
    recorded: GenerationSettings, images: list, run_dir: Path, elapsed: float
) -> GenerationOutput:
    """Each image as `<seed>-<n>.png` in `run_dir` with `recorded` embedded, and a status line."""
    parameters = recorded.to_dict()
    paths = [run_dir / f"{int(recorded.seed)}-{index}.png" for index in range(len(images))]
    for image, path in zip(images, paths, strict=True):
        save_png(image, path, parameters)
    count = len(paths)
    status = (
        f"{count} image{'s' if count != 1 else ''} {recorded.width}x{recorded.height}, "
        f"seed {recorded.seed}, {recorded.steps} steps, {len(recorded.adapters)} adapter(s), "
        f"{elapsed:.1f} s"
    )
    return GenerationOutput(paths=paths, status=status, settings=recorded)


def _progress_callback(progress: ProgressFn) -> Callable[[dict[str, Any]], None]:
    """Turn generate()'s per-step reports (`{"step": k, "total": n}`, k = 1..n) into (fraction,
    text) calls on a Gradio progress bar."""

    def report(info: dict[str, Any]) -> None:
        step, total = int(info["step"]), max(int(info["total"]), 1)
        compiled = f" (compiled in {info['compile_seconds']:.1f} s)" if "compile_seconds" in info else ""
        progress(min(step / total, 1.0), f"sampling step {step}/{total}{compiled}")

    return report


# ---------------------------------------------------------------------------------------------
# Parameters read back from a PNG made here
# ---------------------------------------------------------------------------------------------


@dataclass
class LoadedParameters:
    """The page fields a PNG's parameters fill in; `condition_paths[i]` is None when not on disk."""

    settings: GenerationSettings
    units: list[UnitInput]
    condition_paths: list[str | None]
    message: str


def parameters_from_png(path: str, output_dir: Path, server_model: str | None = None) -> LoadedParameters:
    """Read the parameters `save_png` embedded; conditions are restored only from this page's outputs."""
    name = Path(path).name
    try:
        parameters = read_png_parameters(path)
    except InputFileError as error:
        raise InputFileError(name, error.problem) from None
    if not parameters:
        raise InputFileError(name, "has no t2i-adapter parameters (it was not made by this tool)")
    try:
        settings = GenerationSettings.from_dict(parameters)
    except T2IAdapterError as error:
        raise InputFileError(name, f"parameters cannot be used: {error}") from None
    except (KeyError, TypeError, ValueError) as error:
        raise InputFileError(name, f"parameters cannot be used: {error}") from None

    specs = list(settings.adapters)[:MAX_UNITS]
    units = [UnitInput() for _ in range(MAX_UNITS)]
    condition_paths: list[str | None] = [None] * MAX_UNITS
    outputs = Path(output_dir).resolve()
    for index, spec in enumerate(specs):
        units[index] = UnitInput(
            enabled=True,
            adapter=str(spec.adapter),
            cond_type=spec.cond_type or "none",
            cond_options=format_option_text(spec.cond_options),
            weight=float(spec.weight),
            start=float(spec.start),
            end=float(spec.end),
        )
        cond = Path(str(spec.cond)) if spec.cond else None
        # Only files this page wrote: a PNG from elsewhere must not make the server read its paths.
        if cond is not None and cond.resolve().is_relative_to(outputs) and cond.is_file():
            condition_paths[index] = str(cond.resolve())
    missing = sum(1 for spec, path in zip(specs, condition_paths, strict=False) if path is None)
    message = f"loaded the parameters of {name}"
    if len(settings.adapters) > MAX_UNITS:
        message += f"; only the first {MAX_UNITS} of {len(settings.adapters)} adapters fit the page"
    if missing:
        message += f"; upload the condition image of {missing} unit(s) again"
    if server_model is not None and settings.model != server_model:
        message += f"; it was made with model '{settings.model}', this page uses '{server_model}'"
    return LoadedParameters(settings=settings, units=units, condition_paths=condition_paths, message=message)
