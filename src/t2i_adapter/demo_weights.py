"""Where the packaged demo weights live: `demo` (the base model) and `demo:<condition>` (adapters).

The weights ship inside the package (`t2i_adapter/demo/weights/`): the base model as a diffusers
folder under `base/`, each adapter as a diffusers `T2IAdapter` folder under `adapters/<cond>/`.
`t2i-adapter demo train` rebuilds all of them; `T2I_ADAPTER_DEMO_WEIGHTS` points elsewhere
(a rebuilt set that is not installed yet, for example). These names sit beside `hub.py`, in the
bottom layer, because loading (`checkpoints`, `generation`) resolves them; the demo world that
made the weights stays in `demo/`.
"""

from __future__ import annotations

import os
from pathlib import Path

from t2i_adapter.errors import MissingWeightsError, UnknownNameError

DEMO_NAME = "demo"  # the base model; `demo:<condition>` names an adapter
DEMO_CONDITIONS = ("sketch", "depth", "color")
WEIGHTS_ENV = "T2I_ADAPTER_DEMO_WEIGHTS"
_REBUILD_HINT = "rebuild them with `t2i-adapter demo train`"


def is_demo_name(name: str) -> bool:
    """True for `demo` (the demo base model) and `demo:<condition>` (a demo adapter)."""
    return name == DEMO_NAME or name.startswith(DEMO_NAME + ":")


def demo_adapter_names() -> list[str]:
    """`demo:sketch`, `demo:depth`, `demo:color`: the names the demo adapters go by."""
    return [f"{DEMO_NAME}:{condition}" for condition in DEMO_CONDITIONS]


def weights_root() -> Path:
    """The folder holding `base/` and `adapters/` (the packaged one unless the env var says otherwise)."""
    override = os.environ.get(WEIGHTS_ENV)
    return Path(override).expanduser() if override else Path(__file__).resolve().parent / "demo" / "weights"


def demo_model_path() -> Path:
    """The demo base model's diffusers folder; `MissingWeightsError` if it is not built or shipped."""
    path = weights_root() / "base"
    if not (path / "model_index.json").is_file():
        raise MissingWeightsError(
            f"the demo base model is not in {path} (not built or not shipped); {_REBUILD_HINT}"
        )
    return path


def demo_condition(name: str) -> str:
    """`demo:sketch` or `sketch` -> `sketch`; an unknown condition lists the valid ones."""
    condition = name.split(":", 1)[1] if is_demo_name(name) else name
    if condition not in DEMO_CONDITIONS:
        raise UnknownNameError("demo adapter", name, demo_adapter_names())
    return condition


def demo_adapter_path(name: str) -> Path:
    """The folder of the demo adapter `demo:<cond>`; `MissingWeightsError` if it is not built or shipped."""
    condition = demo_condition(name)
    path = weights_root() / "adapters" / condition
    if not path.is_dir() or not any(path.glob("*.safetensors")):
        raise MissingWeightsError(
            f"the demo adapter 'demo:{condition}' is not in {path} (not built or not shipped); {_REBUILD_HINT}"
        )
    return path


def demo_weights_available() -> bool:
    """True when the base model and every demo adapter are present."""
    try:
        demo_model_path()
        for condition in DEMO_CONDITIONS:
            demo_adapter_path(condition)
    except MissingWeightsError:
        return False
    return True
