"""Micro-batches for one process, starting at any position (see `order.py` for the numbering).

`IndexedBatches` loads through a `torch.utils.data.DataLoader` (optionally with worker processes);
`StreamBatches` reads WebDataset shards in the main process: every process reads the stream and
decodes only its own share, so all processes agree on positions without coordination.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from t2i_adapter.errors import InputFileError
from t2i_adapter.training.data.order import micro_batch_positions, mix_seed, record_at
from t2i_adapter.training.data.shards import RawSample, StreamSource
from t2i_adapter.training.data.source import IndexedSource
from t2i_adapter.training.data.transforms import PreparedExample

logger = logging.getLogger(__name__)

MAX_REPLACEMENTS = 16


def collate(items: list[dict]) -> dict:
    """Stack tensors, keep lists of everything else."""
    batch = {}
    for key in items[0]:
        values = [item[key] for item in items]
        batch[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return batch


def prepared_to_item(prepared: PreparedExample, position: int, resolution: int) -> dict:
    return {
        "position": position,
        "pixels": prepared.pixels,  # (3, R, R)
        "conditions": prepared.condition,  # (C, R, R)
        "captions": prepared.caption,
        # SDXL micro-conditioning: original (h, w), crop (top, left), target (h, w)
        "time_ids": torch.tensor([*prepared.original_size, *prepared.crop_top_left, resolution, resolution]),
    }


class PositionDataset(torch.utils.data.Dataset):
    """`dataset[position]` -> one sample's item dict; bad records are replaced by the next good one."""

    def __init__(self, num_records: int, load: Callable[[int, int, int], dict], seed: int, strict: bool):
        self.num_records = num_records
        self.load = load  # (record index, epoch, position) -> item
        self.seed = seed
        self.strict = strict

    def __len__(self) -> int:  # positions are unbounded; DataLoader only needs the batch sampler
        return self.num_records

    def __getitem__(self, position: int) -> dict:
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
) -> Iterator[dict]:
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
) -> Callable[[int, int, int], dict]:
    """The item loader of an indexed source: augmentation seeded by (seed, epoch, record)."""

    def load(index: int, epoch: int, position: int) -> dict:
        example = source.load(index)
        prepared = prepare(example, rng=random.Random(mix_seed(seed, epoch, index)))
        return prepared_to_item(prepared, position, resolution)

    return load


@dataclass
class StreamBatches:
    """Micro-batches from a `StreamSource`, resumable from (epoch, offset in epoch)."""

    source: StreamSource
    prepare: Callable
    seed: int
    resolution: int
    batch_size: int
    world_size: int
    rank: int
    strict: bool
    epoch: int = 0
    offset: int = 0  # raw samples of `epoch` already consumed (by all processes)
    consumed: int = 0  # raw samples consumed in all epochs: the global position
    replaced: int = 0
    _last_good: dict | None = field(default=None, repr=False)

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

    def __iter__(self) -> Iterator[dict]:
        raw_samples = self._raw()
        group = self.world_size * self.batch_size
        while True:
            items = []
            for slot in range(group):
                raw = next(raw_samples)
                position = self.consumed
                self.offset += 1
                self.consumed += 1
                if slot // self.batch_size == self.rank:
                    items.append(self._decode(raw, position))
            yield collate(items)

    def _decode(self, raw: RawSample, position: int) -> dict:
        try:
            example = self.source.decode(raw)
            rng = random.Random(mix_seed(self.seed, position))
            item = prepared_to_item(self.prepare(example, rng=rng), position, self.resolution)
        except InputFileError as error:
            if self.strict or self._last_good is None:
                raise
            logger.warning("replacing an unreadable sample by the previous one: %s", error)
            self.replaced += 1
            return self._last_good
        self._last_good = item
        return item
