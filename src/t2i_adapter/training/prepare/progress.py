"""Progress of a prepare run: one bar per process, and on the main process one for all of them.

Each process rewrites a small file `<out>/.prepare/rank-NNNNN.json` (its count, at most once a
second) and the main process sums them for the total bar: no collective call, so no process waits
for another while they work. On several machines the total needs the output folder on a shared
filesystem; without one it counts what the main machine sees.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from t2i_adapter.io.atomic import atomic_write

REFRESH_SECONDS = 0.2  # also how long the main process may sleep past the last shard
MISSING_PATIENCE_SECONDS = 60.0  # a process whose file never shows up is on another machine's disk


def _rank_file(folder: Path, rank: int) -> Path:
    return folder / f"rank-{rank:05d}.json"


def clear_rank_files(folder: Path) -> None:
    """Forget the counts of an earlier run (the main process, before any process starts)."""
    for stale in folder.glob("rank-*.json"):
        stale.unlink(missing_ok=True)


class Progress:
    """Bars with images/s: `rank N` for this process's shards, `all` (main process) for the run."""

    def __init__(
        self,
        folder: Path,
        *,
        rank: int,
        world_size: int,
        own_total: int,
        own_done: int,
        total: int,
        enabled: bool,
    ):
        self.folder, self.rank, self.world_size = folder, rank, world_size
        self.done, self.own_total = own_done, own_total
        self._written = 0.0
        several = world_size > 1
        self.total_bar = None
        if rank == 0 and several:
            self.total_bar = tqdm(total=total, desc="all", unit="img", position=0, disable=not enabled)
        self.bar = tqdm(
            total=own_total,
            initial=own_done,
            desc=f"rank {rank}" if several else "preparing",
            unit="img",
            position=rank + 1 if several else 0,
            disable=not enabled,
        )
        self._publish(finished=False, force=True)

    def advance(self, images: int) -> None:
        self.done += images
        self.bar.update(images)
        self._publish(finished=False)

    def finish(self) -> None:
        self._publish(finished=True, force=True)
        self.bar.close()

    def wait_for_others(self) -> None:
        """Main process: keep the total bar moving until every process says it has finished."""
        started = time.monotonic()
        while True:
            counts = self._read_counts()
            self._show_total(counts)
            if all(entry.get("finished") for entry in counts.values()) and len(counts) == self.world_size:
                break
            if len(counts) < self.world_size and time.monotonic() - started > MISSING_PATIENCE_SECONDS:
                break  # not a shared filesystem: the collective wait that follows takes over
            time.sleep(REFRESH_SECONDS)
        if self.total_bar is not None:
            self.total_bar.close()

    def _publish(self, *, finished: bool, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._written < REFRESH_SECONDS:
            return
        self._written = now
        with atomic_write(_rank_file(self.folder, self.rank), "w", encoding="utf-8") as handle:
            json.dump({"done": self.done, "total": self.own_total, "finished": finished}, handle)
        if self.total_bar is not None:
            self._show_total(self._read_counts())

    def _read_counts(self) -> dict[int, dict]:
        counts = {}
        for rank in range(self.world_size):
            try:
                counts[rank] = json.loads(_rank_file(self.folder, rank).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
        return counts

    def _show_total(self, counts: dict[int, dict]) -> None:
        if self.total_bar is None:
            return
        done = sum(int(entry.get("done", 0)) for entry in counts.values())
        self.total_bar.update(max(0, done - self.total_bar.n))
