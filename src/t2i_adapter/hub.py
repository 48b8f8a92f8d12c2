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
model and how to provide it, never a traceback. `quiet_hub()` keeps huggingface_hub's own retry
notes ("Retrying in 1s [Retry 1/5]" five times, each naming the URL) off the user's terminal, and
`hub_failure_reason` turns any hub failure into a few words (offline, no such repository, no such
file) without the library's advice meant for Python callers (`local_files_only`, "the stacktrace
above"). A file not in the cache is first asked for once, without retries: when the hub's host has
no address or refuses the connection (no network, or a typo'd name while offline), the error comes
at once instead of after huggingface_hub's five retries (1 + 2 + 4 + 8 + 8 = 23 s of waiting). A
slow answer (a timeout) is left to huggingface_hub's retries and its timeouts (`HF_HUB_ETAG_TIMEOUT`,
`HF_HUB_DOWNLOAD_TIMEOUT`), as it would be without this package.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from huggingface_hub import (
    constants,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
    try_to_load_from_cache,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)

from t2i_adapter.demo_weights import DEMO_NAME, demo_adapter_path, demo_model_path, is_demo_name
from t2i_adapter.errors import InputFileError, MissingWeightsError, T2IAdapterError, first_line
from t2i_adapter.logs import quiet_logger

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


OFFLINE = "not in the local cache, and the hub could not be reached (offline)"
# What the libraries say when the network is off or unreachable (diffusers and transformers
# rewrap huggingface_hub's errors into an OSError of their own words).
_OFFLINE_WORDS = (
    "outgoing traffic has been disabled",
    "local_files_only",
    "cannot find the requested files in the local cache",
    "name or service not known",
    "failed to resolve",
    "connection",
    "network is unreachable",
    "timed out",
)


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def hub_failure_reason(error: BaseException) -> str:
    """A few words for why a hub download failed, for one `error:` line."""
    causes = list(_causes(error))
    if any(isinstance(cause, GatedRepoError) for cause in causes):
        return "a gated repository: accept its terms on huggingface.co and log in with `hf auth login`"
    if any(isinstance(cause, RepositoryNotFoundError) for cause in causes):
        return "no such repository on the hub (or a private one: log in with `hf auth login`)"
    if any(isinstance(cause, (LocalEntryNotFoundError, OfflineModeIsEnabled)) for cause in causes):
        return OFFLINE
    text = " ".join(str(cause) for cause in causes).lower()
    if any(words in text for words in _OFFLINE_WORDS):
        return OFFLINE
    if any(isinstance(cause, EntryNotFoundError) for cause in causes):
        return "no such file in the hub repository"
    return first_line(error)


def quiet_hub() -> contextlib.AbstractContextManager[None]:
    """huggingface_hub's retry notes off the terminal while it downloads (the failure says it once)."""
    return quiet_logger("huggingface_hub")


def _missing(what: str, name: str, cause: Exception) -> MissingWeightsError:
    return MissingWeightsError(
        f"could not get {what} '{name}' from the Hugging Face hub: {hub_failure_reason(cause)}; download "
        f"it once with network access (it is kept in the cache under HF_HOME), or pass a local path instead"
    )


def _unreachable(error: BaseException) -> bool:
    """True when the hub's host has no address, refuses the connection or has no route: no network
    here, not a slow one, so waiting and retrying does not help."""
    for cause in _causes(error):
        if isinstance(cause, (socket.gaierror, ConnectionRefusedError)):
            return True
        if isinstance(cause, OSError) and cause.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return True
    return False


def _fail_fast_when_unreachable(repo_id: str, filename: str) -> None:
    """One request for a file's metadata, no retries, before downloading a file not in the cache;
    raises only when the hub cannot be reached at all (anything else is the download's to report)."""
    if isinstance(try_to_load_from_cache(repo_id, filename), str):
        return  # cached: huggingface_hub falls back to it at once when the hub is unreachable
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename), timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except Exception as error:
        if _unreachable(error):
            raise


def download_file(repo_id: str, filename: str, *, what: str) -> Path:
    """One file of a hub repository, through the huggingface_hub cache."""
    try:
        with quiet_hub():
            _fail_fast_when_unreachable(repo_id, filename)
            return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except Exception as error:  # network, auth, missing file, offline mode: all the same to the user
        raise _missing(what, f"{repo_id}/{filename}", error) from error


def download_snapshot(repo_id: str, *, what: str, allow_patterns: list[str] | None = None) -> Path:
    """A whole hub repository (or the files matching `allow_patterns`), through the cache."""
    try:
        with quiet_hub():
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
