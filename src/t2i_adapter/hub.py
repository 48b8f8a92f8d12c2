"""Where weights come from: the packaged demo weights, a local path, or the Hugging Face hub.

`locate(name)` is the one rule deciding what a name of weights means, for adapters, base models
and preprocessor models alike. In this order:
1. `demo` / `demo:<condition>`: the packaged demo base model / adapter (`demo_weights.py`);
2. an existing file or folder: used as it is;
3. a name only a local path can be (absolute, `./`, `../`, `~`, a backslash, or a weights file
   name with at most one `/`, like `adapter.pth` or `runs/adapter.safetensors`): a missing
   local path, a one-line `InputFileError`;
4. `owner/repo/path/file.ext`: one file of a hub repository;
5. `owner/repo` (or a one-word legacy id): a hub repository.
Anything else (`owner/repo/folder`, empty parts) is refused, naming the forms that work. What a
caller then does with a location (download a snapshot, one file, or hand a hub id to diffusers)
is its own business; the decision is made here once.

Downloads go through huggingface_hub, so its cache (`HF_HOME`) and offline mode
(`HF_HUB_OFFLINE=1`) apply. A failed download becomes a `MissingWeightsError` that says which
model and how to provide it, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from huggingface_hub import hf_hub_download, snapshot_download

from t2i_adapter.demo_weights import DEMO_NAME, demo_adapter_path, demo_model_path, is_demo_name
from t2i_adapter.errors import InputFileError, MissingWeightsError, T2IAdapterError, first_line

PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"
WEIGHT_SUFFIXES = (SAFETENSORS_SUFFIX, *PICKLE_SUFFIXES)

# What `locate` found.
DEMO = "demo"
LOCAL = "local"
HUB_FILE = "hub file"
HUB_REPO = "hub repository"

NAME_FORMS = "a local file or folder, a hub id owner/name, a hub file owner/name/file.ext, or demo"


@dataclass(frozen=True)
class Location:
    """What a name of weights points to: `kind` is DEMO, LOCAL, HUB_FILE or HUB_REPO."""

    kind: str
    name: str
    path: Path | None = None  # LOCAL: the existing file or folder; DEMO: the packaged folder
    repo_id: str | None = None  # HUB_FILE, HUB_REPO
    filename: str | None = None  # HUB_FILE: the file's path inside the repository


def split_hub_file(name: str) -> tuple[str, str] | None:
    """`owner/repo/path/in/repo.pth` -> (`owner/repo`, `path/in/repo.pth`); None for a plain repo id."""
    parts = name.split("/")
    if len(parts) < 3 or not all(parts):
        return None
    return "/".join(parts[:2]), "/".join(parts[2:])


def _only_local(name: str) -> bool:
    """Names no hub id can be: paths, and weights file names with at most one folder."""
    if Path(name).is_absolute() or name.startswith((".", "~")) or "\\" in name:
        return True
    return name.lower().endswith(WEIGHT_SUFFIXES) and name.count("/") < 2


def locate(name: str | PathLike, *, what: str) -> Location:
    """Decide once whether `name` is demo weights, a local path, a hub file or a hub repository.

    `what` names the weights in errors (`adapter`, `base model`, `depth model`).
    """
    text = str(name).strip()
    if is_demo_name(text):
        return Location(DEMO, text, path=demo_model_path() if text == DEMO_NAME else demo_adapter_path(text))
    path = Path(text).expanduser()
    if text and path.exists():
        return Location(LOCAL, text, path=path)
    if not text or _only_local(text):
        raise InputFileError(text or "''", f"no such file or folder ({what})")
    hub_file = split_hub_file(text)
    if hub_file is not None and "." in hub_file[1].rsplit("/", 1)[-1]:
        return Location(HUB_FILE, text, repo_id=hub_file[0], filename=hub_file[1])
    parts = text.split("/")
    if len(parts) <= 2 and all(parts):
        return Location(HUB_REPO, text, repo_id=text)
    raise T2IAdapterError(f"{what} '{text}': no such file or folder, and not a hub id; give {NAME_FORMS}")


# ---------------------------------------------------------------------------------------------
# Downloads (through the huggingface_hub cache)
# ---------------------------------------------------------------------------------------------


def _missing(what: str, name: str, cause: Exception) -> MissingWeightsError:
    return MissingWeightsError(
        f"could not get {what} '{name}' from the Hugging Face hub ({first_line(cause)}); download it once "
        f"with network access (it is kept in the cache under HF_HOME), or pass a local path instead"
    )


def download_file(repo_id: str, filename: str, *, what: str) -> Path:
    """One file of a hub repository, through the huggingface_hub cache."""
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except Exception as error:  # network, auth, missing file, offline mode: all the same to the user
        raise _missing(what, f"{repo_id}/{filename}", error) from error


def download_snapshot(repo_id: str, *, what: str, allow_patterns: list[str] | None = None) -> Path:
    """A whole hub repository (or the files matching `allow_patterns`), through the cache."""
    try:
        return Path(snapshot_download(repo_id=repo_id, allow_patterns=allow_patterns))
    except Exception as error:
        raise _missing(what, repo_id, error) from error


def fetch(location: Location, *, what: str, allow_patterns: list[str] | None = None) -> Path:
    """The file or folder a location stands for on this machine (downloaded into the cache if needed)."""
    if location.kind == HUB_FILE:
        return download_file(location.repo_id, location.filename, what=what)
    if location.kind == HUB_REPO:
        return download_snapshot(location.repo_id, what=what, allow_patterns=allow_patterns)
    return location.path
