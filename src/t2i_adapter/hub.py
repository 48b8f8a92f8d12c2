"""Where weights come from: a local path, the packaged demo world, or the Hugging Face hub.

Downloads go through huggingface_hub, so its cache (`HF_HOME`) and offline mode
(`HF_HUB_OFFLINE=1`) apply. A failed download becomes a `MissingWeightsError` that says which
model and how to provide it, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

from t2i_adapter.errors import MissingWeightsError, first_line

DEMO_PREFIX = "demo"


def is_demo_name(name: str) -> bool:
    """True for `demo` (the demo base model) and `demo:<condition>` (a demo adapter)."""
    return name == DEMO_PREFIX or name.startswith(DEMO_PREFIX + ":")


def _missing(what: str, name: str, cause: Exception) -> MissingWeightsError:
    reason = first_line(cause)
    return MissingWeightsError(
        f"could not get {what} '{name}' from the Hugging Face hub ({reason}); download it once with "
        f"network access (it is kept in the cache under HF_HOME), or pass a local path instead"
    )


def split_hub_file(name: str) -> tuple[str, str] | None:
    """`owner/repo/path/in/repo.pth` -> (`owner/repo`, `path/in/repo.pth`); None for a plain repo id."""
    parts = name.split("/")
    if len(parts) < 3 or not all(parts):
        return None
    return "/".join(parts[:2]), "/".join(parts[2:])


def download_file(repo_id: str, filename: str, *, what: str) -> Path:
    """One file of a hub repository, through the huggingface_hub cache."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except Exception as error:  # network, auth, missing file, offline mode: all the same to the user
        raise _missing(what, f"{repo_id}/{filename}", error) from error


def download_snapshot(repo_id: str, *, what: str, allow_patterns: list[str] | None = None) -> Path:
    """A whole hub repository (or the files matching `allow_patterns`), through the cache."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=repo_id, allow_patterns=allow_patterns))
    except Exception as error:
        raise _missing(what, repo_id, error) from error


def resolve_local_or_hub(name: str, *, what: str, allow_patterns: list[str] | None = None) -> Path:
    """A local file or folder as it is; `owner/repo/file` as one downloaded file; else a snapshot."""
    path = Path(name).expanduser()
    if path.exists():
        return path
    if name.startswith((".", "/", "~")) or "\\" in name:
        raise MissingWeightsError(f"{name}: no such file or folder ({what})")
    hub_file = split_hub_file(name)
    if hub_file is not None and "." in hub_file[1].rsplit("/", 1)[-1]:
        return download_file(*hub_file, what=what)
    return download_snapshot(name, what=what, allow_patterns=allow_patterns)
