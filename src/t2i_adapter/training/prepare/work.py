"""The work of a prepare run: which input samples make which output shard, and which process makes it.

Output shard `k` depends only on the input (never on how many processes run), so any number of
processes, and a resumed run, write the same shards:

- a listed dataset (meta file, folder, JSONL, `datasets`): shard `k` holds records
  `k * samples_per_shard` up to the next multiple, in the dataset's order;
- WebDataset shards: output shard `k` holds input shard `k`'s samples, in stored order.

Process `rank` of `world_size` makes shards `rank, rank + world_size, ...`.
"""

from __future__ import annotations

from dataclasses import dataclass

from t2i_adapter.training.data.prepared import SHARD_PATTERN
from t2i_adapter.training.data.shards import StreamSource
from t2i_adapter.training.data.source import IndexedSource


@dataclass(frozen=True)
class WorkUnit:
    """One output shard and where its samples come from."""

    index: int
    records: range | None = None  # a listed dataset's record indices
    input_shard: str | None = None  # a WebDataset input shard

    @property
    def name(self) -> str:
        return SHARD_PATTERN.format(self.index)


def plan_work(source: IndexedSource | StreamSource, samples_per_shard: int) -> list[WorkUnit]:
    """Every output shard of the run, in order."""
    if source.streamed:
        return [WorkUnit(index, input_shard=shard) for index, shard in enumerate(source.shards)]
    starts = range(0, len(source), samples_per_shard)
    return [
        WorkUnit(index, records=range(start, min(start + samples_per_shard, len(source))))
        for index, start in enumerate(starts)
    ]


def share_of(units: list[WorkUnit], world_size: int, rank: int) -> list[WorkUnit]:
    """The units process `rank` makes."""
    return units[rank::world_size]


def sample_key(unit: WorkUnit, record: int, position: int) -> str:
    """A key unique in the output, the same in every run: the record index, or (shard, position)."""
    if unit.records is not None:
        return f"{record:09d}"
    return f"{unit.index:06d}_{position:06d}"
