"""Micro-batches for one process, starting at any position (see `order.py` for the numbering).

Every sample becomes a `TrainingSample` and every micro-batch a `TrainingBatch` (built by
`collate`): prepared pixels and captions, or with `--cache-latents` the VAE posterior and text
embeddings read back from the cache; the fields a path does not fill are None.
`indexed_batches` loads through a `torch.utils.data.DataLoader` (optionally with worker processes);
`StreamBatches` reads WebDataset shards in the main process: each process walks its own share of
the shards (see `shards.shard_share`), and gives its samples the positions `order.py` assigns to
its micro-batches, so the processes agree on positions without coordination.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields

import torch

from t2i_adapter.errors import InputFileError
from t2i_adapter.training.data.order import micro_batch_positions, mix_seed, record_at
from t2i_adapter.training.data.shards import RawSample, StreamSource
from t2i_adapter.training.data.source import IndexedSource
from t2i_adapter.training.data.transforms import PreparedExample

logger = logging.getLogger(__name__)

MAX_REPLACEMENTS = 16


@dataclass
class TrainingSample:
    """One sample, ready to batch: pixels and caption, or (cached) their encodings."""

    position: int  # global sample position: seeds the sample's timestep, caption dropout and noise
    condition: torch.Tensor  # (C, R, R) in [0, 1]
    time_ids: torch.Tensor  # (6,) SDXL micro-conditioning: original (h, w), crop (top, left), target (h, w)
    pixels: torch.Tensor | None = None  # (3, R, R) in [-1, 1]; None when cached
    caption: str | None = None  # None when cached
    latent_mean: torch.Tensor | None = None  # (4, R/8, R/8) VAE posterior mean; only when cached
    latent_std: torch.Tensor | None = None  # (4, R/8, R/8) VAE posterior std; only when cached
    embeds: torch.Tensor | None = None  # (77, D) caption embeddings; only when cached
    pooled: torch.Tensor | None = None  # (P,) SDXL pooled caption embedding; only when cached (SDXL)
    where: str | None = None  # where the sample came from ("photos/a.png"), for error messages


@dataclass
class TrainingBatch:
    """One micro-batch of one process: what `objective.compute_loss` reads.

    Uncached runs carry `pixels` and `captions` (the loss encodes them); `--cache-latents` runs carry
    `latent_mean`/`latent_std` and `embeds` (+ `pooled` for SDXL) instead. Absent fields are None.
    """

    positions: list[int]  # (B,) global sample positions
    conditions: torch.Tensor  # (B, C, R, R) in [0, 1]
    time_ids: torch.Tensor  # (B, 6) SDXL micro-conditioning (unused by SD 1.x/2.x)
    pixels: torch.Tensor | None = None  # (B, 3, R, R) in [-1, 1]
    captions: list[str] | None = None  # (B,)
    latent_mean: torch.Tensor | None = None  # (B, 4, R/8, R/8)
    latent_std: torch.Tensor | None = None  # (B, 4, R/8, R/8)
    embeds: torch.Tensor | None = None  # (B, 77, D)
    pooled: torch.Tensor | None = None  # (B, P)
    wheres: list[str | None] | None = None  # (B,) where each sample came from, when known

    def to(self, device: torch.device | str) -> TrainingBatch:
        """The same batch with every tensor on `device` (dtypes kept: the loss casts to the models')."""
        moved = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            moved[spec.name] = value.to(device) if isinstance(value, torch.Tensor) else value
        return TrainingBatch(**moved)


def _stacked(samples: list[TrainingSample], name: str) -> torch.Tensor | None:
    values = [getattr(sample, name) for sample in samples]
    return None if values[0] is None else torch.stack(values)


def collate(samples: list[TrainingSample]) -> TrainingBatch:
    """Stack the samples of one micro-batch (a field the samples lack stays None)."""
    return TrainingBatch(
        positions=[sample.position for sample in samples],
        conditions=_stacked(samples, "condition"),
        time_ids=_stacked(samples, "time_ids"),
        pixels=_stacked(samples, "pixels"),
        captions=None if samples[0].caption is None else [sample.caption for sample in samples],
        latent_mean=_stacked(samples, "latent_mean"),
        latent_std=_stacked(samples, "latent_std"),
        embeds=_stacked(samples, "embeds"),
        pooled=_stacked(samples, "pooled"),
        wheres=[sample.where for sample in samples],
    )


def stream_resume_point(saved: dict, world_size: int, rank: int) -> dict[str, int]:
    """This process's (epoch, offset) from a checkpoint's stream positions (`{}`: a fresh start).

    Same number of processes: exactly where it stopped. Another number: the shards are dealt out
    anew, so every process starts the epoch after the furthest one reached (docs/training.md).
    """
    if not saved:
        return {}
    ranks = saved.get("ranks")
    if ranks is not None and saved.get("world_size") == world_size:
        return dict(ranks[rank])
    furthest = max(entry["epoch"] for entry in ranks) if ranks is not None else saved.get("epoch", 0)
    logger.warning(
        "the checkpoint's data stream was read by %s process(es), this run has %d: the shards are dealt "
        "out anew and every process starts epoch %d (the data order differs from an uninterrupted run)",
        saved.get("world_size", "an unknown number of"),
        world_size,
        furthest + 1,
    )
    return {"epoch": furthest + 1, "offset": 0}


def prepared_to_item(prepared: PreparedExample, position: int, resolution: int) -> TrainingSample:
    """The sample at `position` from a prepared (resized, cropped) example."""
    return TrainingSample(
        position=position,
        condition=prepared.condition,
        time_ids=torch.tensor([*prepared.original_size, *prepared.crop_top_left, resolution, resolution]),
        pixels=prepared.pixels,
        caption=prepared.caption,
        where=prepared.where or None,
    )


class PositionDataset(torch.utils.data.Dataset):
    """`dataset[position]` -> one `TrainingSample`; bad records are replaced by the next good one."""

    def __init__(
        self, num_records: int, load: Callable[[int, int, int], TrainingSample], seed: int, strict: bool
    ):
        self.num_records = num_records
        self.load = load  # (record index, epoch, position) -> sample
        self.seed = seed
        self.strict = strict

    def __len__(self) -> int:  # positions are unbounded; DataLoader only needs the batch sampler
        return self.num_records

    def __getitem__(self, position: int) -> TrainingSample:
        epoch, index = record_at(position, self.num_records, self.seed)
        for attempt in range(MAX_REPLACEMENTS):
            try:
                return self.load((index + attempt) % self.num_records, epoch, position)
            except InputFileError as error:
                if self.strict:
                    raise
                logger.warning("skipping a sample that became unreadable: %s", error)
        raise InputFileError(f"position {position}", f"{MAX_REPLACEMENTS} unreadable samples in a row")


def indexed_batches(
    dataset: PositionDataset,
    *,
    start: int,
    batch_size: int,
    world_size: int,
    rank: int,
    num_workers: int,
) -> Iterator[TrainingBatch]:
    """Endless micro-batches of this process, for the positions after `start` (samples already used)."""
    batch_sampler = (micro_batch_positions(start, m, batch_size, world_size, rank) for m in itertools.count())
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        collate_fn=collate,
        persistent_workers=False,
    )
    return iter(loader)


def load_indexed(
    source: IndexedSource, prepare: Callable, seed: int, resolution: int
) -> Callable[[int, int, int], TrainingSample]:
    """The sample loader of an indexed source: augmentation seeded by (seed, epoch, record)."""

    def load(index: int, epoch: int, position: int) -> TrainingSample:
        example = source.load(index)
        prepared = prepare(example, rng=random.Random(mix_seed(seed, epoch, index)))
        return prepared_to_item(prepared, position, resolution)

    return load


def load_cached(cache) -> Callable[[int, int, int], TrainingSample]:
    """The sample loader of a `LatentCache`: its augmentation was fixed when the cache was built."""

    def load(index: int, epoch: int, position: int) -> TrainingSample:
        return cache.sample(index, position)

    return load


@dataclass
class StreamBatches:
    """Micro-batches from this process's share of a `StreamSource`, resumable from (epoch, offset)."""

    source: StreamSource
    prepare: Callable
    seed: int
    resolution: int
    batch_size: int
    world_size: int
    rank: int
    strict: bool
    start: int = 0  # global sample position when the run (re)started: numbers this process's samples
    epoch: int = 0  # this process's epoch over its share
    offset: int = 0  # raw samples of `epoch` this process has consumed
    replaced: int = 0
    _last_good: TrainingSample | None = field(default=None, repr=False)

    def position(self) -> dict[str, int]:
        """Where this process's stream stands, for a checkpoint (see `stream_resume_point`)."""
        return {"epoch": self.epoch, "offset": self.offset}

    def _raw(self) -> Iterator[RawSample]:
        while True:
            produced = False
            for index, raw in enumerate(self.source.raw_samples(self.epoch, self.seed)):
                produced = True
                if index < self.offset:
                    continue  # resuming: replay the epoch's order without decoding
                yield raw
            if not produced:
                raise InputFileError(self.source.path, "the shards hold no readable samples")
            self.epoch, self.offset = self.epoch + 1, 0

    def __iter__(self) -> Iterator[TrainingBatch]:
        raw_samples = self._raw()
        for micro_batch in itertools.count():
            samples = []
            for position in micro_batch_positions(
                self.start, micro_batch, self.batch_size, self.world_size, self.rank
            ):
                samples.append(self._next_sample(raw_samples, position))
            yield collate(samples)

    def _next_sample(self, raw_samples: Iterator[RawSample], position: int) -> TrainingSample:
        """The sample at `position`: an unreadable one is replaced by the previous good one, or
        (before the first good one) skipped for the next raw sample."""
        for _ in range(MAX_REPLACEMENTS):
            raw = next(raw_samples)
            self.offset += 1
            sample = self._decode(raw, position)
            if sample is not None:
                return sample
        raise InputFileError(self.source.path, f"{MAX_REPLACEMENTS} unreadable samples in a row")

    def _decode(self, raw: RawSample, position: int) -> TrainingSample | None:
        try:
            example = self.source.decode(raw)
            rng = random.Random(mix_seed(self.seed, position))
            sample = prepared_to_item(self.prepare(example, rng=rng), position, self.resolution)
        except InputFileError as error:
            if self.strict:
                raise
            self.replaced += 1
            if self._last_good is None:
                logger.warning("skipping an unreadable sample: %s", error)
                return None
            logger.warning("replacing an unreadable sample by the previous one: %s", error)
            return self._last_good
        self._last_good = sample
        return sample
