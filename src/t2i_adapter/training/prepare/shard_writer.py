"""Write one WebDataset shard atomically and reproducibly.

webdataset's `TarWriter` lays the samples out (members in sorted order); a fixed modification
time, owner and mode make the same samples give the same bytes on every run and machine. The
shard is written to a hidden temporary file beside it, fsynced and renamed into place, so a
`shard-*.tar` is always complete: a run killed at any moment leaves whole shards and at most a
hidden `.shard-*` leftover, which the next `--resume` removes.
"""

from __future__ import annotations

from pathlib import Path

from t2i_adapter.io.atomic import atomic_path

FIXED_MTIME = 0.0  # members carry no clock: identical samples give identical bytes
OWNER = "t2i-adapter"


def write_shard(path: Path, samples: list[dict[str, bytes | str]]) -> None:
    """Write `samples` (each `{"__key__": key, extension: bytes, ...}`) as the tar file `path`."""
    from webdataset import TarWriter  # the optional `data` extra

    with atomic_path(path) as temporary, open(temporary, "wb") as stream:
        with TarWriter(stream, user=OWNER, group=OWNER, encoder=False, mtime=FIXED_MTIME) as writer:
            for sample in samples:
                writer.write(sample)
        stream.flush()


def remove_leftovers(folder: Path, name: str) -> None:
    """Delete the hidden temporary files a killed run left for the shard `name`."""
    for leftover in folder.glob(f".{name}.*"):
        leftover.unlink(missing_ok=True)
