"""PNG files that remember how they were made: parameters as JSON in an iTXt chunk.

`save_png` writes two text chunks before the image data:

* `t2i-adapter`: the parameters as JSON (the machine-readable record; `read_png_parameters`
  returns it as a dict, so a generation can be repeated from the file alone);
* `parameters`: a human-readable summary in the AUTOMATIC1111 style (prompt, then
  `Negative prompt: ...`, then `Key: value, ...`), which image viewers and other tools show.
"""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from t2i_adapter.errors import InputFileError
from t2i_adapter.io.atomic import atomic_write
from t2i_adapter.io.images import DEFAULT_MAX_PIXELS

PARAMETERS_KEY = "t2i-adapter"
SUMMARY_KEY = "parameters"


def save_png(image: Image.Image, path: str | PathLike, parameters: dict[str, Any] | None = None) -> Path:
    """Write `image` as a PNG atomically, with `parameters` embedded as JSON; returns the path."""
    info = PngImagePlugin.PngInfo()
    if parameters is not None:
        info.add_itxt(PARAMETERS_KEY, json.dumps(parameters, sort_keys=True, default=_json_default))
        info.add_itxt(SUMMARY_KEY, parameters_summary(parameters))
    if image.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
        image = image.convert("RGB")
    target = Path(path)
    with atomic_write(target) as handle:
        image.save(handle, format="PNG", pnginfo=info)
    return target


def read_png_parameters(source: str | PathLike | Image.Image) -> dict[str, Any] | None:
    """The parameters `save_png` embedded (a dict), or None when the image has none."""
    if isinstance(source, Image.Image):
        return _parse(_text_chunk(source), "<image>")
    path = Path(source)
    if not path.is_file():
        raise InputFileError(path, "no such file" if not path.exists() else "is a folder, not an image file")
    try:
        with Image.open(path, formats=["PNG"]) as image:
            raw = _text_chunk(image)
    except UnidentifiedImageError:
        raise InputFileError(path, "not a PNG file") from None
    except Exception as error:  # truncated or corrupt files raise many kinds inside Pillow
        raise InputFileError(path, f"cannot read its text chunks ({type(error).__name__}: {error})") from None
    return _parse(raw, str(path))


def parameters_summary(parameters: dict[str, Any]) -> str:
    """An AUTOMATIC1111-style summary: prompt, `Negative prompt: ...`, then `Key: value, ...`."""
    lines = []
    if parameters.get("prompt"):
        lines.append(str(parameters["prompt"]))
    if parameters.get("negative_prompt"):
        lines.append(f"Negative prompt: {parameters['negative_prompt']}")
    fields = []
    for key, value in parameters.items():
        if key in ("prompt", "negative_prompt") or value is None:
            continue
        label = key.replace("_", " ").capitalize()
        if isinstance(value, PathLike):
            value = str(value)
        shown = (
            value if isinstance(value, str | int | float | bool) else json.dumps(value, default=_json_default)
        )
        fields.append(f"{label}: {shown}")
    if fields:
        lines.append(", ".join(fields))
    return "\n".join(lines)


def _text_chunk(image: Image.Image) -> str | None:
    value = image.info.get(PARAMETERS_KEY)
    small = image.width * image.height <= DEFAULT_MAX_PIXELS
    if value is None and small and hasattr(image, "text"):
        value = image.text.get(PARAMETERS_KEY)  # chunks after the image data need a full decode
    return None if value is None else str(value)


def _parse(raw: str | None, name: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        parameters = json.loads(raw)
    except json.JSONDecodeError:
        raise InputFileError(name, f"the '{PARAMETERS_KEY}' text chunk is not valid JSON") from None
    except RecursionError:  # the decoder recurses once per nesting level
        raise InputFileError(name, f"the '{PARAMETERS_KEY}' text chunk is nested too deeply") from None
    if not isinstance(parameters, dict):
        raise InputFileError(name, f"the '{PARAMETERS_KEY}' text chunk is not a JSON object")
    return parameters


def _json_default(value: Any) -> Any:
    if isinstance(value, PathLike):
        return str(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in PNG parameters")
