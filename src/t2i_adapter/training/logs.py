"""Training logs: `metrics.csv` (always) and TensorBoard event files (when tensorboard is installed).

On resume, CSV rows past the resumed step (written by the killed run after its last checkpoint)
are dropped, so the file reads as one uninterrupted run; its `seconds` go on from the last row
kept (`seconds_before`) instead of starting again at 0.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

CSV_FILE = "metrics.csv"
TENSORBOARD_FOLDER = "tensorboard"
COLUMNS = ("step", "loss", "lr", "samples_per_second", "seconds")


class TrainingLog:
    """Write scalars per step to CSV and TensorBoard (main process only)."""

    def __init__(self, output_dir: Path, *, resume_step: int, enabled: bool = True):
        self.enabled = enabled
        self.csv_path = Path(output_dir) / CSV_FILE
        self.writer = None
        self.seconds_before = 0.0  # training seconds the kept rows already account for
        if not enabled:
            return
        self._truncate_after(resume_step)
        new_file = not self.csv_path.exists()
        self._csv = open(self.csv_path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._rows = csv.DictWriter(self._csv, fieldnames=COLUMNS)
        if new_file:
            self._rows.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the optional tensorboard

            self.writer = SummaryWriter(
                str(Path(output_dir) / TENSORBOARD_FOLDER), purge_step=resume_step + 1
            )
        except ImportError:
            logger.info("tensorboard is not installed: logging to %s only", self.csv_path)

    def _truncate_after(self, step: int) -> None:
        if not self.csv_path.exists():
            return
        with open(self.csv_path, newline="", encoding="utf-8") as handle:
            rows = [
                row
                for row in csv.DictReader(handle)
                if row.get("step", "").isdigit() and int(row["step"]) <= step
            ]
        if rows:
            try:
                self.seconds_before = float(rows[-1].get("seconds") or 0.0)
            except ValueError:
                self.seconds_before = 0.0
        with open(self.csv_path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._rows.writerow({"step": step, **{k: values.get(k, "") for k in COLUMNS if k != "step"}})
        self._csv.flush()
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"train/{key}", value, step)

    def evaluation(self, step: int, scores: dict[str, dict[str, float]]) -> None:
        """Evaluation scores to TensorBoard as `eval/<metric>` (adapter), `eval_baseline/<metric>`."""
        if not (self.enabled and self.writer is not None):
            return
        for group, tag in (("adapter", "eval"), ("baseline", "eval_baseline")):
            for key, value in scores.get(group, {}).items():
                if value == value:  # nan (a metric undefined on these samples) is left out
                    self.writer.add_scalar(f"{tag}/{key}", value, step)

    def images(self, step: int, tag: str, images) -> None:
        if self.enabled and self.writer is not None:
            for index, image in enumerate(images):
                self.writer.add_image(f"{tag}/{index}", np.asarray(image), step, dataformats="HWC")

    def close(self) -> None:
        if not self.enabled:
            return
        self._csv.close()
        if self.writer is not None:
            self.writer.close()
