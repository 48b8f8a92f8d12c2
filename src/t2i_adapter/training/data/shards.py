"""WebDataset tar shards, read as a stream (LAION-scale data that does not fit a file listing).

Each sample is the group of tar members sharing a key: the image (`.jpg`, `.jpeg`, `.png`,
`.webp`), the condition (`.<cond_type>.png` or `.cond.png` / `.conditioning.png`, any image
suffix) and the caption (`.txt`, or `.json` with a `text`/`caption` field):

```
shard-000000.tar: 000001.jpg 000001.depth.png 000001.txt 000002.jpg ...
```

`PATH` is one `.tar`, a folder of them (hidden `.*` files are not shards), or a brace pattern
(`data/shard-{000000..000099}.tar`). The order is seeded: shards are shuffled per epoch, then
samples pass a shuffle buffer. Without condition members, a registered preprocessor
(`--cond-type canny`) computes them.

Several processes (DDP) each read only their own share (`shard_share`): shards `rank`,
`rank + world_size`, ...; with fewer shards than processes, the processes that share a shard take
every k-th of its samples. Each process then has its own seeded order over its share, so the global
order is fixed for a given number of processes (and, for one process, the same as before).
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from t2i_adapter.errors import InputFileError, T2IAdapterError
from t2i_adapter.io.images import load_image_from_bytes
from t2i_adapter.io.text import CAPTION_MAX_BYTES, parse_json
from t2i_adapter.training.data.example import Example
from t2i_adapter.training.data.source import is_grey_mode, registered_preprocessor

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
CONDITION_TAGS = ("cond", "condition", "conditioning")
SHUFFLE_BUFFER = 256
TAR_BLOCK = 512


def list_shards(location: str) -> list[str]:
    """The shard files of `location`: a .tar, a folder of .tar files, or a brace pattern."""
    import braceexpand  # installed with webdataset (optional): only for .tar shards

    if "{" in location:
        shards = list(braceexpand.braceexpand(location))
        missing = [shard for shard in shards if not Path(shard).is_file()]
        if missing:
            raise InputFileError(missing[0], f"missing shard ({len(missing)} of {len(shards)} missing)")
        return shards
    path = Path(location)
    if path.is_dir():
        shards = sorted(str(p) for p in path.glob("*.tar") if not p.name.startswith("."))
        if not shards:
            raise InputFileError(path, "no .tar shards in this folder")
        return shards
    if not path.is_file():
        raise InputFileError(path, "no such file or folder")
    return [str(path)]


def ends_cleanly(shard: str) -> bool:
    """Whether a tar file ends with its end-of-archive marker (two zero blocks), as a complete one does."""
    try:
        with open(shard, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size < 2 * TAR_BLOCK or size % TAR_BLOCK:
                return False
            handle.seek(size - 2 * TAR_BLOCK)
            return handle.read(2 * TAR_BLOCK) == bytes(2 * TAR_BLOCK)
    except OSError:
        return True  # unreadable: reading its samples reports it


def has_image(sample: RawSample) -> bool:
    return any(extension in sample.members for extension in IMAGE_EXTENSIONS)


def shard_share(shards: list[str], world_size: int, rank: int) -> tuple[list[str], int, int]:
    """Process `rank`'s shards, and which of their samples it takes: every `stride`-th from `offset`.

    By shard when there are at least as many shards as processes; otherwise each process reads one
    shard, and the processes reading the same shard split its samples.
    """
    if len(shards) >= world_size:
        return shards[rank::world_size], 1, 0
    shard = rank % len(shards)
    sharing = len(range(shard, world_size, len(shards)))  # processes reading this shard
    return [shards[shard]], sharing, rank // len(shards)


def is_shard_location(location: str) -> bool:
    path = Path(location)
    return (
        location.endswith(".tar")
        or ("{" in location and ".tar" in location)
        or (path.is_dir() and any(path.glob("*.tar")))
    )


@dataclass
class RawSample:
    """One sample as stored: its key, its shard, and its members' bytes by extension."""

    key: str
    shard: str
    members: dict[str, bytes]

    @property
    def where(self) -> str:
        return f"{self.shard}:{self.key}"


@dataclass
class StreamSource:
    """A stream of samples from tar shards, in a seeded order."""

    path: str
    shards: list[str]
    cond_type: str | None
    computes_condition: bool = False
    condition_channels: int | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)  # shard-level read errors
    rank: int = 0  # this process's share of the shards (see `shard_share`); `shards` holds only it
    world_size: int = 1
    sample_stride: int = 1
    sample_offset: int = 0

    format = "webdataset"
    streamed = True

    @property
    def condition_mode(self) -> str:
        return "L" if self.condition_channels == 1 else "RGB"

    def read_shard(self, shard: str) -> Iterator[RawSample]:
        """The samples of one shard in stored order; a broken shard is recorded in `errors`.

        A shard cut off in the middle (no end-of-archive marker; tar readers stop there without a
        word) loses its last sample, which may miss members: it is recorded in `errors` instead."""
        from webdataset.tariterators import tarfile_samples  # optional: only for .tar shards

        def keep_going(error: Exception) -> bool:
            self.errors.append((shard, f"cannot read the shard ({error})"))
            return False  # stop this shard, go on with the next

        last = None
        for sample in tarfile_samples([{"url": shard}], handler=keep_going):
            if last is not None:
                yield last
            members = {k: v for k, v in sample.items() if not k.startswith("__")}
            last = RawSample(key=sample["__key__"], shard=shard, members=members)
        if last is not None and not ends_cleanly(shard):
            self.errors.append((last.where, "incomplete: the shard is truncated (cut off in this sample)"))
        elif last is not None:
            yield last

    def raw_samples(self, epoch: int, seed: int) -> Iterator[RawSample]:
        """One epoch of this process's raw samples: its shards shuffled, then a shuffle buffer, both seeded."""
        share = f"-{self.rank}-of-{self.world_size}" if self.world_size > 1 else ""
        rng = random.Random(f"{seed}-{epoch}{share}")
        shards = list(self.shards)
        rng.shuffle(shards)
        buffer: list[RawSample] = []
        for shard in shards:
            for index, sample in enumerate(self.read_shard(shard)):
                if index % self.sample_stride != self.sample_offset:
                    continue  # another process's sample of a shared shard
                buffer.append(sample)
                if len(buffer) >= SHUFFLE_BUFFER:
                    yield buffer.pop(rng.randrange(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer

    def condition_bytes(self, sample: RawSample) -> bytes | None:
        tags = ((self.cond_type,) if self.cond_type else ()) + CONDITION_TAGS
        for tag in tags:
            for extension in IMAGE_EXTENSIONS:
                data = sample.members.get(f"{tag}.{extension}")
                if data is not None:
                    return data
        return None

    def decode(self, sample: RawSample):
        """The `Example` of a raw sample; `InputFileError` naming shard and key when it is unusable."""
        image_bytes = next((sample.members[e] for e in IMAGE_EXTENSIONS if e in sample.members), None)
        if image_bytes is None:
            raise InputFileError(sample.where, "no image member (.jpg/.jpeg/.png/.webp)")
        image = load_image_from_bytes(image_bytes, sample.where, mode="RGB")
        condition = None
        if not self.computes_condition:
            data = self.condition_bytes(sample)
            if data is None:
                raise InputFileError(sample.where, f"no condition member (.{self.cond_type or 'cond'}.png)")
            condition = load_image_from_bytes(data, sample.where + " (condition)", mode=self.condition_mode)
        return Example(where=sample.where, image=image, condition=condition, caption=_caption(sample))


def _caption(sample: RawSample) -> str:
    for extension in ("txt", "json"):
        if len(sample.members.get(extension, b"")) > CAPTION_MAX_BYTES:
            raise InputFileError(
                sample.where, f"the .{extension} member is larger than {CAPTION_MAX_BYTES >> 20} MiB"
            )
    if "txt" in sample.members:
        return sample.members["txt"].decode("utf-8", errors="replace").strip().split("\n")[0]
    if "json" in sample.members:
        entry = parse_json(sample.members["json"], sample.where, what="the .json member")
        if isinstance(entry, dict):
            return str(entry.get("text") or entry.get("caption") or "")
    return ""


def open_shards(
    location: str,
    cond_type: str | None,
    condition_channels: int | None,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> StreamSource:
    """A `StreamSource` over process `rank`'s share of the shards (all of them for one process);
    whether conditions are computed is read from the first sample of the share."""
    shards, stride, offset = shard_share(list_shards(location), world_size, rank)
    source = StreamSource(
        path=location,
        shards=shards,
        cond_type=cond_type,
        rank=rank,
        world_size=world_size,
        sample_stride=stride,
        sample_offset=offset,
    )
    first = next((sample for sample in source.read_shard(source.shards[0]) if has_image(sample)), None)
    if first is None:
        raise InputFileError(source.shards[0], "the shard holds no samples with an image")
    if source.condition_bytes(first) is None:
        spec = registered_preprocessor(cond_type)
        if spec is None:
            raise T2IAdapterError(
                f"{location}: samples have no condition member; pass --cond-type with a registered preprocessor"
            )
        source.computes_condition = True
    spec = registered_preprocessor(cond_type)
    if condition_channels is None and spec is not None:
        condition_channels = spec.channels
    if condition_channels is None:
        with Image.open(io.BytesIO(source.condition_bytes(first))) as opened:
            condition_channels = 1 if is_grey_mode(opened.mode) else 3
    source.condition_channels = condition_channels
    source.errors.clear()
    return source
