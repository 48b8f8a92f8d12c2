"""The one registry of condition preprocessors: PIL image in, PIL condition map out.

A preprocessor is a function `fn(image: PIL.Image.Image, **options) -> PIL.Image.Image`
registered with `@register_condition(name, channels=...)`. `get_preprocessor(name)` returns its
`ConditionSpec`, whose call normalises both ends: the function always receives an RGB image,
and the caller always gets mode "L" (1 channel) or "RGB" (3 channels) at the input's size
(unless the spec says `keeps_size=False`). A model-based preprocessor may also register a batch
function (`@register_batch(name)`, same options, a list of images in and out) so that
`spec.batch(images)` runs the model once per batch; without one, `batch` calls `fn` per image.

The built-in modules in `BUILTIN_MODULES` are imported on first access to the registry, not at
package import, so model-based preprocessors (depth, pose, ...) cost nothing until used, and a
module whose optional dependency is missing is skipped (see `unavailable_modules()`) without
breaking the weight-free ones.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from t2i_adapter.conditions.options import parse_bool
from t2i_adapter.errors import T2IAdapterError, UnknownNameError
from t2i_adapter.io.images import normalize_image

PreprocessorFn = Callable[..., Image.Image]
BatchPreprocessorFn = Callable[..., list[Image.Image]]

BUILTIN_MODULES = (
    "t2i_adapter.conditions.basic",
    "t2i_adapter.conditions.depth",
    "t2i_adapter.conditions.pose",
    "t2i_adapter.conditions.edges",
    "t2i_adapter.conditions.segmentation",
    "t2i_adapter.conditions.style",
)

_MODES = {1: "L", 3: "RGB"}


@dataclass(frozen=True)
class ConditionSpec:
    """A registered preprocessor: its name, output channels, description and function."""

    name: str
    channels: int
    description: str
    needs_weights: bool
    fn: PreprocessorFn = field(repr=False, compare=False)
    aliases: tuple[str, ...] = ()
    keeps_size: bool = True
    batch_fn: BatchPreprocessorFn | None = field(default=None, repr=False, compare=False)

    @property
    def mode(self) -> str:
        """The Pillow mode of this preprocessor's output: "L" or "RGB"."""
        return _MODES[self.channels]

    @property
    def options(self) -> dict[str, Any]:
        """Keyword options the function takes, with their defaults (`inspect.Parameter.empty` if none)."""
        parameters = list(inspect.signature(self.fn).parameters.values())[1:]
        return {
            p.name: p.default
            for p in parameters
            if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        }

    def __call__(self, image: Image.Image, **options: Any) -> Image.Image:
        """Run the preprocessor on `image`; returns an "L" or "RGB" image (see `channels`)."""
        options = self._check_options(options)
        source = image if image.mode == "RGB" else _to_rgb(image)
        return self._finish(self.fn(source, **options), image)

    def batch(self, images: list[Image.Image], **options: Any) -> list[Image.Image]:
        """Run the preprocessor on several images (one model call per batch when it has a batch function)."""
        if self.batch_fn is None:
            return [self(image, **options) for image in images]
        options = self._check_options(options)
        sources = [image if image.mode == "RGB" else _to_rgb(image) for image in images]
        results = self.batch_fn(sources, **options)
        return [self._finish(result, image) for result, image in zip(results, images, strict=True)]

    def _finish(self, result: Any, image: Image.Image) -> Image.Image:
        """The function's output in this spec's mode, at the input's size."""
        if not isinstance(result, Image.Image):
            raise TypeError(f"preprocessor '{self.name}' returned {type(result).__name__}, not a PIL image")
        if result.mode != self.mode:
            result = result.convert(self.mode)
        if self.keeps_size and result.size != image.size:
            result = result.resize(image.size, Image.Resampling.BILINEAR)
        return result

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """`options` as the function gets them: unknown names (an error naming this condition type
        and listing its options) and values that do not fit an option's type are refused; text is
        converted to the type of the option's default. Checks before any model is loaded."""
        return self._check_options(options)

    def _check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Reject unknown option names; convert values to the type of the option's default."""
        parameters = inspect.signature(self.fn).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return options
        valid = self.options
        checked = {}
        for key, value in options.items():
            if key not in valid:
                raise UnknownNameError(f"{self.name} option", key, valid or ["(none)"])
            checked[key] = _coerce(self.name, key, value, valid[key])
        return checked


def _coerce(condition: str, key: str, value: Any, default: Any) -> Any:
    """`value` as the type of `default` (bool, int or float); other defaults accept anything."""
    kind = type(default)
    if kind not in (bool, int, float) or type(value) is kind:
        return value
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind is bool and isinstance(value, str) and parse_bool(value) is not None:
        return parse_bool(value)
    if kind is not bool and isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            pass
    expected = {bool: "true or false (yes/no, on/off, 1/0)", int: "an integer", float: "a number"}[kind]
    raise T2IAdapterError(f"{condition} option {key}={value!r} must be {expected}")


# ---------------------------------------------------------------------------------------------
# Registry state (module-level by design: registration happens at import time)
# ---------------------------------------------------------------------------------------------

_specs: dict[str, ConditionSpec] = {}
_aliases: dict[str, str] = {}
_unavailable: dict[str, str] = {}
_loaded = False
_lock = threading.RLock()


def register_condition(
    name: str,
    *,
    channels: int,
    description: str,
    needs_weights: bool = False,
    aliases: tuple[str, ...] | list[str] = (),
    keeps_size: bool = True,
) -> Callable[[PreprocessorFn], PreprocessorFn]:
    """Decorator registering `fn(image, **options) -> image` as the preprocessor `name`."""
    if channels not in _MODES:
        raise ValueError(f"channels must be 1 or 3, not {channels!r}")
    key = _normalise(name)

    def decorate(fn: PreprocessorFn) -> PreprocessorFn:
        with _lock:
            for taken in (key, *map(_normalise, aliases)):
                if taken in _specs or taken in _aliases:
                    raise ValueError(f"condition name '{taken}' is already registered")
            _specs[key] = ConditionSpec(
                name=key,
                channels=channels,
                description=description,
                needs_weights=needs_weights,
                fn=fn,
                aliases=tuple(_normalise(a) for a in aliases),
                keeps_size=keeps_size,
            )
            for alias in aliases:
                _aliases[_normalise(alias)] = key
        return fn

    return decorate


def register_batch(name: str) -> Callable[[BatchPreprocessorFn], BatchPreprocessorFn]:
    """Decorator adding `fn(images, **options) -> images` as the batch form of the registered `name`."""
    key = _normalise(name)

    def decorate(fn: BatchPreprocessorFn) -> BatchPreprocessorFn:
        with _lock:
            if key not in _specs:
                raise ValueError(f"register the condition '{key}' before its batch function")
            _specs[key] = dataclasses.replace(_specs[key], batch_fn=fn)
        return fn

    return decorate


def get_preprocessor(name: str) -> ConditionSpec:
    """The `ConditionSpec` registered as `name` (or an alias); unknown names list the valid ones."""
    _ensure_loaded()
    key = _normalise(name)
    key = _aliases.get(key, key)
    if key not in _specs:
        raise UnknownNameError("condition type", name, _specs.keys())
    return _specs[key]


def preprocess(name: str, image: Image.Image, **options: Any) -> Image.Image:
    """Run the preprocessor `name` on `image` with `options`."""
    return get_preprocessor(name)(image, **options)


def available_conditions() -> list[str]:
    """Sorted names of every registered preprocessor (aliases not included)."""
    _ensure_loaded()
    return sorted(_specs)


def condition_specs() -> list[ConditionSpec]:
    """Every registered `ConditionSpec`, sorted by name."""
    _ensure_loaded()
    return [_specs[name] for name in sorted(_specs)]


def unavailable_modules() -> dict[str, str]:
    """Built-in preprocessor modules that could not be imported, with the reason."""
    _ensure_loaded()
    return dict(_unavailable)


# ---------------------------------------------------------------------------------------------
# Lazy loading of the built-in modules
# ---------------------------------------------------------------------------------------------


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        for module in BUILTIN_MODULES:
            _import_builtin(module)
        _loaded = True


def _import_builtin(module: str) -> None:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name == module:
            return  # that preprocessor file does not exist (yet): nothing to register
        _unavailable[module] = f"needs the missing package '{error.name}'"
        warnings.warn(f"{module} is unavailable: {_unavailable[module]}", RuntimeWarning, stacklevel=3)
    except ImportError as error:
        _unavailable[module] = str(error)
        warnings.warn(f"{module} is unavailable: {error}", RuntimeWarning, stacklevel=3)


def _normalise(name: str) -> str:
    if not isinstance(name, str):
        raise T2IAdapterError(f"condition type must be a name, not {type(name).__name__}")
    return name.strip().lower().replace("-", "_")


def _to_rgb(image: Image.Image) -> Image.Image:
    return normalize_image(image, mode="RGB")
