"""Shards written by `t2i-adapter data prepare`: their files, and reading them back.

A prepared folder holds plain WebDataset shards (any WebDataset reader, and the trainer's
streaming path, read them as they are) plus the files that describe the run:

```
prepared/
  prepare.json             the run's settings (written first; `--resume` must match them)
  shard-000000.tar ...     one sample per key: image (.jpg/.png/...), cond.png, txt, json,
                           and with --model latents.safetensors (VAE posterior + text embeddings)
  empty.safetensors        with --model: the empty caption's embeddings (caption dropout)
  index.json               written last: every shard with its sample count (the run is complete)
  report.txt               the samples that were skipped, with the reason
  .prepare/                per-shard records and per-process progress (for --resume)
```

Each sample's `cond.png` has its image's size. Its `json` member records where the sample came
from and how its condition was made: `{"source": ..., "caption": ..., "size": [w, h],
"condition": {"from": "dataset"|"preprocessor", "type": ..., "options": {...}}}`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from t2i_adapter.errors import InputFileError

FORMAT_VERSION = 1
SETTINGS_FILE = "prepare.json"
INDEX_FILE = "index.json"
REPORT_FILE = "report.txt"
EMPTY_CAPTION_FILE = "empty.safetensors"
WORK_FOLDER = ".prepare"
CONDITION_MEMBER = "cond.png"
LATENTS_MEMBER = "latents.safetensors"
SHARD_PATTERN = "shard-{:06d}.tar"


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, None when the file does not exist; a clear error when it is broken."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputFileError(path, f"cannot read: {error}") from None
    if not isinstance(data, dict):
        raise InputFileError(path, "not a JSON object")
    return data


def prepared_index(folder: str | Path) -> dict[str, Any] | None:
    """The `index.json` of a complete prepared folder, or None when `folder` is not one."""
    path = Path(folder)
    if not path.is_dir():
        return None
    return read_json(path / INDEX_FILE)
