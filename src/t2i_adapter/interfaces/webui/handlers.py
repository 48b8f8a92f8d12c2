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

from PIL import Image, ImageChops

from t2i_adapter.conditions.options import format_option_text, parse_option_text
from t2i_adapter.conditions.registry import preprocess
from t2i_adapter.errors import InputFileError, T2IAdapterError
from t2i_adapter.generation.settings import AdapterSpec, GenerationSettings, LoraSpec
from t2i_adapter.io.images import check_image_bytes, load_image, normalize_image
from t2i_adapter.io.png import read_png_parameters, save_png

MAX_UNITS = 4
MAX_SEED = 2**32 - 1
SOURCE_UPLOAD = "upload"
SOURCE_SKETCH = "sketch"
MODE_TXT2IMG, MODE_IMG2IMG, MODE_INPAINT = "txt2img", "img2img", "inpaint"
MODES = (MODE_TXT2IMG, MODE_IMG2IMG, MODE_INPAINT)

# The page's number fields and their (minimum, maximum): `app.py` builds its sliders from these,
# and a value read from a PNG outside them is not put in the page (it is named in the message).
FIELD_RANGES: dict[str, tuple[float, float]] = {
    "steps": (1, 150),
    "guidance_scale": (1.0, 20.0),
    "seed": (0, MAX_SEED),
    "width": (64, 2048),
    "height": (64, 2048),
    "num_images": (1, 8),
    "strength": (0.01, 1.0),
    "mask_blur": (0, 64),
    "inpaint_full_res_padding": (0, 256),
    "hires_scale": (1.0, 4.0),  # 1: no hires pass
    "hires_strength": (0.01, 1.0),
    "hires_steps": (0, 150),  # 0: as many as the first pass
}
UNIT_RANGES: dict[str, tuple[float, float]] = {"weight": (0.0, 2.0), "start": (0.0, 1.0), "end": (0.0, 1.0)}

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
    give them (an empty seed box is None: a fresh seed; no scheduler: the default; an empty eta box
    is None: the scheduler's own) and the units."""

    prompt: str | None
    negative_prompt: str | None
    steps: float
    guidance_scale: float
    seed: float | None
    width: float
    height: float
    num_images: float
    scheduler: str | None = None
    eta: str | float | None = None  # DDIM's eta, TCD's gamma, as typed; empty: the scheduler's own
    units: list[UnitInput] = field(default_factory=list)
    mode: str = MODE_TXT2IMG
    init_upload: str | None = None  # the init picture's file (img2img and inpaint)
    init_editor: Any = None  # gr.ImageEditor value over the init picture: its layers are the mask
    mask_upload: str | None = None  # a mask file (white: repaint); it wins over the painted strokes
    strength: float = 0.75
    mask_blur: float = 4
    inpaint_full_res: bool = False
    inpaint_full_res_padding: float = 32
    loras: Any = None  # rows of [file/folder/hub id, scale] (a gr.Dataframe's value)
    hires_scale: float = 1.0
    hires_strength: float = 0.5
    hires_steps: float = 0
    hires_upscaler: str = "latent"
    vae: str | None = None  # another VAE (folder, file or hub id) as typed; empty: the model's own


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
    picture = uploaded_picture(upload_path, limits)
    if picture is None:
        raise T2IAdapterError(f"unit {unit}: no condition image; upload one or draw a sketch")
    return picture


def uploaded_picture(upload_path: str | None, limits: Limits) -> Image.Image | None:
    """An uploaded picture (a condition or the init picture) within `limits`; None when there is none."""
    if not upload_path:
        return None
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


def check_canvas_file(file: str | Path | bytes, limits: Limits, name: str) -> None:
    """Refuse a canvas picture (sketchpad, image editor) over the upload limits before Gradio
    decodes it: the same byte cap and decompression-bomb check as an uploaded file, from the
    header alone. `name` says which canvas, since the browser's file has no name the user knows."""
    if isinstance(file, bytes | bytearray | memoryview):
        data = bytes(file)
    else:
        try:
            size = Path(file).stat().st_size
            if size > limits.max_bytes:
                raise InputFileError(
                    name, f"file is too large ({size} bytes; the limit is {limits.max_bytes})"
                )
            data = Path(file).read_bytes()
        except OSError as error:
            raise InputFileError(name, f"cannot read: {error.strerror or error}") from None
    check_image_bytes(data, name, max_pixels=limits.max_pixels, max_bytes=limits.max_bytes)


# ---------------------------------------------------------------------------------------------
# img2img and inpaint: the init picture and the mask painted on it
# ---------------------------------------------------------------------------------------------


def editor_value(picture: Image.Image | None, mask: Image.Image | None = None) -> dict | None:
    """What the mask editor shows: the init picture, and a mask (white: repaint) as a painted layer."""
    if picture is None:
        return None
    layers = []
    if mask is not None:
        alpha = mask.convert("L").resize(picture.size, Image.Resampling.NEAREST)
        layer = Image.new("RGBA", picture.size, (255, 255, 255, 0))
        layer.putalpha(alpha)
        layers.append(layer)
    return {"background": picture, "layers": layers, "composite": picture}


def editor_mask(editor: Any, size: tuple[int, int] | None = None) -> Image.Image | None:
    """The strokes painted in the image editor as a mask: white where any layer was painted (any
    opacity), black elsewhere, resized to `size`; None when nothing was painted."""
    layers = editor.get("layers") if isinstance(editor, dict) else None
    alpha = None
    for layer in layers or []:
        if layer is None:
            continue
        if not isinstance(layer, Image.Image):
            layer = Image.fromarray(layer)
        channel = layer.convert("RGBA").getchannel("A")
        alpha = channel if alpha is None else ImageChops.lighter(alpha, channel)
    if alpha is None or alpha.getbbox() is None:
        return None
    mask = alpha.point(lambda value: 255 if value else 0)
    if size is not None and mask.size != tuple(size):
        mask = mask.resize(size, Image.Resampling.NEAREST)
    return mask


def mode_pictures(
    page: PageInput, limits: Limits, notes: list[str] | None = None
) -> tuple[Image.Image | None, Image.Image | None]:
    """(init picture, mask) for the page's mode: none for txt2img, the upload for img2img, and for
    inpaint the uploaded mask file if there is one (it wins over painted strokes), else the mask
    painted over the picture; what is missing is one line. A note for the status line (a mask
    file resized to the picture) is appended to `notes`."""
    if page.mode not in MODES:
        raise T2IAdapterError(f"unknown mode '{page.mode}'; choose one of {', '.join(MODES)}")
    if page.mode == MODE_TXT2IMG:
        return None, None
    init = uploaded_picture(page.init_upload, limits)
    if init is None:
        raise T2IAdapterError(f"{page.mode}: upload an init picture first")
    if page.mode == MODE_IMG2IMG:
        return init, None
    if page.mask_upload:
        return init, uploaded_mask(page.mask_upload, init.size, limits, notes if notes is not None else [])
    mask = editor_mask(page.init_editor, init.size)
    if mask is None:
        raise T2IAdapterError(
            "inpaint: paint over the part of the init picture to repaint, or upload a mask file, first"
        )
    return init, mask


def uploaded_mask(path: str, size: tuple[int, int], limits: Limits, notes: list[str]) -> Image.Image:
    """A mask file (white, >= 128: repaint) checked like any upload, as a black-and-white picture
    of `size`: another size is resized to it with a note, as the CLI does; one with no white is
    refused (nothing to repaint)."""
    name = Path(path).name
    mask = uploaded_picture(path, limits).convert("L")
    if mask.size != tuple(size):
        notes.append(
            f"note: the mask {name} is {mask.size[0]}x{mask.size[1]}, the init picture "
            f"{size[0]}x{size[1]}: the mask is resized to it"
        )
        mask = mask.resize(size, Image.Resampling.BILINEAR)
    mask = mask.point(lambda value: 255 if value >= 128 else 0)
    if mask.getextrema()[1] == 0:
        raise InputFileError(name, "has no white pixel: nothing to repaint (white marks what to repaint)")
    return mask


def parse_loras(rows: Any) -> list[LoraSpec]:
    """The LoRA table's rows (`[file, folder or hub id, scale]`) as `LoraSpec`s; empty rows are
    skipped and an empty scale is 1."""
    if hasattr(rows, "values") and hasattr(rows, "columns"):  # a pandas DataFrame
        rows = rows.values.tolist()
    specs = []
    for number, row in enumerate(rows or [], start=1):
        cells = list(row) + [None, None]
        path = "" if cells[0] is None else str(cells[0]).strip()
        if not path:
            continue
        scale = cells[1]
        try:
            scale = 1.0 if scale is None or str(scale).strip() in ("", "nan") else float(scale)
        except (TypeError, ValueError):
            raise T2IAdapterError(f"LoRA row {number} ({path}): scale {scale!r} is not a number") from None
        specs.append(LoraSpec(path, scale))
    return specs


def parse_eta(text: str | float | None) -> float | None:
    """The eta box: empty is None (the scheduler's own eta), else a number (`GenerationSettings`
    checks its range)."""
    if text is None or not str(text).strip():
        return None
    try:
        return float(str(text).strip())
    except ValueError:
        raise T2IAdapterError(f"eta '{text}' is not a number (empty: the scheduler's own)") from None


def eta_text(eta: float | None) -> str:
    """What the eta box shows for a recorded eta: empty for none."""
    return "" if eta is None else str(float(eta))  # repr: exactly the recorded number


def _image_fields(page: PageInput, init_path: str | None, mask_path: str | None) -> dict[str, Any]:
    """The `GenerationSettings` fields of the page's mode and hires pass (none for a plain txt2img)."""
    values: dict[str, Any] = {}
    if init_path is not None:
        values.update(init_image=init_path, strength=float(page.strength))
    if mask_path is not None:
        values.update(
            mask=mask_path,
            mask_blur=int(page.mask_blur),
            inpaint_full_res=bool(page.inpaint_full_res),
            inpaint_full_res_padding=int(page.inpaint_full_res_padding),
        )
    if page.hires_scale and float(page.hires_scale) > 1.0:
        if mask_path is not None:
            raise T2IAdapterError(
                "inpaint: the hires fix does not go with a mask; set 'Upscale by' to 1 and inpaint "
                "at the size you want"
            )
        values.update(
            hires_scale=float(page.hires_scale),
            hires_strength=float(page.hires_strength),
            hires_steps=int(page.hires_steps) or None,
            hires_upscaler=page.hires_upscaler or "latent",
        )
    return values


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
    page: PageInput,
    *,
    model: str,
    condition_paths: list[str],
    init_path: str | None = None,
    mask_path: str | None = None,
    compile: bool = False,
) -> GenerationSettings:
    """A `GenerationSettings` from the page; `condition_paths` names each enabled unit's picture,
    `init_path` and `mask_path` the init picture and the mask as saved for this run; `compile` is
    the server's (`serve --compile`)."""
    adapters = [
        replace(spec, cond=path) for spec, path in zip(check_units(page.units), condition_paths, strict=True)
    ]
    extra = {"scheduler": page.scheduler} if page.scheduler else {}
    eta = parse_eta(page.eta)
    if eta is not None:
        extra["eta"] = eta
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
        loras=parse_loras(page.loras),
        vae=page.vae or None,  # an empty box: the model's own
        **_image_fields(page, init_path, mask_path),
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
    notes: list[str] = []
    init, mask = mode_pictures(page, limits, notes)
    kept = {"init.png": init, "mask.png": mask}  # saved next to the outputs, named by the PNG
    settings = build_settings(
        page,
        model=model,
        condition_paths=[str(path) for path in condition_paths],
        init_path=str(run_dir / "init.png") if init is not None else None,
        mask_path=str(run_dir / "mask.png") if mask is not None else None,
        compile=compile,
    )
    pictures = [
        source_image(unit.source, unit.upload_path, unit.sketch, limits, unit=number)
        for number, unit in enumerate(page.units, start=1)
        if unit.enabled
    ]
    callback = _progress_callback(progress) if progress is not None else None
    # Only given when used, so a txt2img run calls generate() as before.
    images = {"init_image": init, "mask_image": mask} if init is not None else {}
    started = time.monotonic()
    result = generate(settings, condition_images=pictures or None, cache=cache, progress=callback, **images)
    # The run folder is made only now: a refused generation (a bad LoRA or VAE) leaves nothing.
    run_dir.mkdir(parents=True, exist_ok=True)
    for picture, path in [
        *zip(pictures, condition_paths, strict=True),
        *((v, run_dir / k) for k, v in kept.items()),
    ]:
        if picture is not None:
            save_png(picture, path)
    output = _saved_outputs(result.settings or settings, result.images, run_dir, time.monotonic() - started)
    output.status = "; ".join([output.status, *notes])
    return output


def _saved_outputs(
    recorded: GenerationSettings, images: list, run_dir: Path, elapsed: float
) -> GenerationOutput:
    """Each image as `<seed>-<n>.png` in `run_dir` with `recorded` embedded, and a status line."""
    parameters = recorded.to_dict()
    paths = [run_dir / f"{int(recorded.seed)}-{index}.png" for index in range(len(images))]
    for image, path in zip(images, paths, strict=True):
        save_png(image, path, parameters)
    count = len(paths)
    width, height = images[0].size if images else (recorded.width, recorded.height)  # hires: larger
    status = (
        f"{count} image{'s' if count != 1 else ''} {width}x{height}, "
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
    """The page fields a PNG's parameters fill in; `condition_paths[i]` is None when not on disk.

    `fields` maps `PageInput` field names to the values to show; a field left out stays as it is
    (a size the CLI took from the condition, a value outside the page's range)."""

    settings: GenerationSettings
    units: list[UnitInput]
    condition_paths: list[str | None]
    message: str
    fields: dict[str, Any] = field(default_factory=dict)


def parameters_from_png(path: str, output_dir: Path, server_model: str | None = None) -> LoadedParameters:
    """Read the parameters `save_png` embedded; pictures are restored only from this page's outputs."""
    name = Path(path).name
    settings = _png_settings(path, name)
    outputs = Path(output_dir).resolve()
    specs = list(settings.adapters)[:MAX_UNITS]
    units = [UnitInput() for _ in range(MAX_UNITS)]
    notes: list[str] = []
    for index, spec in enumerate(specs):
        units[index] = _restored_unit(spec, index + 1, notes)
    condition_paths = [_kept_file(spec.cond, outputs) for spec in specs]
    condition_paths += [None] * (MAX_UNITS - len(specs))
    fields, field_notes = page_fields(settings, outputs)
    missing = sum(1 for cond in condition_paths[: len(specs)] if cond is None)
    message = f"loaded the parameters of {name}"
    if len(settings.adapters) > MAX_UNITS:
        message += f"; only the first {MAX_UNITS} of {len(settings.adapters)} adapters fit the page"
    if missing:
        message += f"; upload the condition image of {missing} unit(s) again"
    if getattr(settings, "init_image", None) and "init_upload" not in fields:
        message += "; upload the init picture again" + (
            " and paint the mask" if fields.get("mode") == MODE_INPAINT else ""
        )
    if notes or field_notes:
        message += (
            f"; left as they were (outside the page's ranges): {', '.join(notes + field_notes)}; "
            "'t2i-adapter generate --from-png' repeats it as recorded"
        )
    if server_model is not None and settings.model != server_model:
        message += f"; it was made with model '{settings.model}', this page uses '{server_model}'"
    return LoadedParameters(settings, units, condition_paths, message, fields)


def _png_settings(path: str, name: str) -> GenerationSettings:
    """The PNG's parameters as checked `GenerationSettings` (types and ranges), or one line naming it."""
    try:
        parameters = read_png_parameters(path)
    except InputFileError as error:
        raise InputFileError(name, error.problem) from None
    if not parameters:
        raise InputFileError(name, "has no t2i-adapter parameters (it was not made by this tool)")
    try:
        return GenerationSettings.from_dict(parameters)
    except (T2IAdapterError, KeyError, TypeError, ValueError) as error:
        raise InputFileError(name, f"parameters cannot be used: {error}") from None


def _kept_file(recorded: str | None, outputs: Path) -> str | None:
    """A picture path from a PNG, if it is a file this page wrote: a PNG from elsewhere must not
    make the server read its paths."""
    if not recorded:
        return None
    file = Path(str(recorded))
    if file.resolve().is_relative_to(outputs) and file.is_file():
        return str(file.resolve())
    return None


def _in_range(
    name: str, value: Any, ranges: dict[str, tuple[float, float]], notes: list[str], who: str = ""
) -> bool:
    low, high = ranges[name]
    if low <= value <= high:
        return True
    notes.append(f"{who}{name} {value} (the page takes {low} to {high})")
    return False


def _restored_unit(spec: AdapterSpec, number: int, notes: list[str]) -> UnitInput:
    """An adapter unit from a recorded `AdapterSpec`; weight and window outside the page's sliders
    keep the unit's defaults."""
    unit = UnitInput(
        enabled=True,
        adapter=str(spec.adapter),
        cond_type=spec.cond_type or "none",
        cond_options=format_option_text(spec.cond_options),
    )
    for name in UNIT_RANGES:
        value = float(getattr(spec, name))
        if _in_range(name, value, UNIT_RANGES, notes, f"unit {number} "):
            setattr(unit, name, value)
    return unit


def recorded_mode(settings: GenerationSettings) -> str:
    """txt2img, img2img or inpaint: what a recorded run was."""
    if getattr(settings, "mask", None):
        return MODE_INPAINT
    return MODE_IMG2IMG if getattr(settings, "init_image", None) else MODE_TXT2IMG


def page_fields(settings: GenerationSettings, outputs: Path) -> tuple[dict[str, Any], list[str]]:
    """The page's field values for recorded `settings` and notes naming each number the page's
    ranges cannot show (those fields are left out: the page keeps its value). The init picture
    and mask come back only from `outputs`, as the conditions do."""
    hires = getattr(settings, "hires_scale", None)
    fields: dict[str, Any] = {
        "prompt": settings.prompt,
        "negative_prompt": settings.negative_prompt,
        "scheduler": settings.scheduler,
        "eta": eta_text(getattr(settings, "eta", None)),  # no eta empties the box
        "mode": recorded_mode(settings),
        "loras": [[spec.path, spec.scale] for spec in settings.loras] or [["", 1.0]],
        "vae": settings.vae or "",  # a PNG made with the model's own VAE empties the box
    }
    numbers = {name: getattr(settings, name, None) for name in FIELD_RANGES}
    numbers.update(hires_scale=hires or 1.0, hires_steps=getattr(settings, "hires_steps", None) or 0)
    notes: list[str] = []
    for name, value in numbers.items():
        if value is not None and _in_range(name, value, FIELD_RANGES, notes):
            fields[name] = value
    for name in ("inpaint_full_res", "hires_upscaler"):
        if getattr(settings, name, None) is not None:
            fields[name] = getattr(settings, name)
    fields.update(_restored_pictures(settings, outputs))
    return fields, notes


def _restored_pictures(settings: GenerationSettings, outputs: Path) -> dict[str, Any]:
    """The init upload and the editor (init picture with the mask painted) for a recorded run."""
    init_path = _kept_file(getattr(settings, "init_image", None), outputs)
    if init_path is None:
        return {}
    mask_path = _kept_file(getattr(settings, "mask", None), outputs)
    picture = load_image(init_path)
    mask = load_image(mask_path, mode="L") if mask_path else None
    # The recorded mask comes back painted in the editor: a mask file still in the page would win.
    return {"init_upload": init_path, "init_editor": editor_value(picture, mask), "mask_upload": None}
