"""Which sample goes where: a seeded order that depends only on (seed, position), never on history.

The trainer consumes a global stream of sample *positions* 0, 1, 2, ...: the k-th micro-batch
after position `start`, on process `rank` of `world_size`, takes the `batch_size` positions
starting at `start + (k * world_size + rank) * batch_size` (`start` is the number of samples the
run had consumed when it was (re)started).
Position `p` of an indexed dataset with `N` records is record `permutation(epoch)[p % N]` with
`epoch = p // N`; its augmentation, noise, timestep and caption dropout are drawn from generators
seeded by `(seed, p)`. So the data position is just a number: a resumed run, a run with a
different number of workers, and (up to floating-point summation order) a run on a different
number of processes all see the same samples with the same noise.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def mix_seed(*values: int) -> int:
    """A 63-bit seed mixing `values` (numpy's SeedSequence: independent streams for nearby inputs)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1, np.uint64)[0] >> 1)


@lru_cache(maxsize=4)
def epoch_permutation(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """The order of records in `epoch`."""
    return np.random.default_rng(mix_seed(seed, epoch, 1)).permutation(num_samples)


def record_at(position: int, num_samples: int, seed: int) -> tuple[int, int]:
    """(epoch, record index) of global sample position `position`."""
    epoch, offset = divmod(position, num_samples)
    return epoch, int(epoch_permutation(num_samples, seed, epoch)[offset])


def micro_batch_positions(
    start: int, micro_batch: int, batch_size: int, world_size: int, rank: int
) -> list[int]:
    """The global positions of one process's share of the `micro_batch`-th micro-batch after `start`."""
    first = start + (micro_batch * world_size + rank) * batch_size
    return list(range(first, first + batch_size))
