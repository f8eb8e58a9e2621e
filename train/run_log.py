"""The run's metric log: JSON lines and CSV always, TensorBoard when it is installed.

``metrics.jsonl`` holds every record (``kind`` "train" per logged step, "val" per validation);
``train_steps.csv`` and ``validation.csv`` hold the same rows as tables for spreadsheets. On resume, rows
logged after the checkpoint's step (by a run that crashed later) are dropped, so each step appears once.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

JSONL = "metrics.jsonl"
CSV_FILES = {"train": "train_steps.csv", "val": "validation.csv"}


class RunLog:
    """Appends metric records of one run directory; a no-op on processes other than the main one.

    Args:
        directory: the run's output directory.
        start_step: the step training (re)starts from; records with a larger step are discarded.
        enabled: False on non-main processes.
    """

    def __init__(self, directory: str | Path, *, start_step: int, enabled: bool) -> None:
        self.directory = Path(directory)
        self.enabled = enabled
        self.columns: dict[str, list[str]] = {}
        self.tensorboard = None
        if not enabled:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        kept = [r for r in self._read_records() if r["step"] <= start_step] if start_step else []
        with open(self.directory / JSONL, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in kept)
        for kind, name in CSV_FILES.items():
            (self.directory / name).unlink(missing_ok=True)
            for record in (r for r in kept if r["kind"] == kind):
                self._append_csv(record)
        self.tensorboard = _tensorboard_writer(self.directory / "tensorboard", start_step)

    def log(self, kind: str, step: int, values: dict[str, Any]) -> None:
        """Records ``values`` (numbers) of kind "train" or "val" at global ``step``."""
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, **values}
        with open(self.directory / JSONL, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        self._append_csv(record)
        if self.tensorboard is not None:
            for name, value in values.items():
                if isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(f"{kind}/{name}", value, step)

    def close(self) -> None:
        """Flushes TensorBoard."""
        if self.tensorboard is not None:
            self.tensorboard.close()

    def _read_records(self) -> list[dict[str, Any]]:
        path = self.directory / JSONL
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def _append_csv(self, record: dict[str, Any]) -> None:
        path = self.directory / CSV_FILES[record["kind"]]
        columns = self.columns.setdefault(record["kind"], [k for k in record if k != "kind"])
        new_file = not path.exists()
        with open(path, "a", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(record)


def _tensorboard_writer(directory: Path, start_step: int):
    """A SummaryWriter that discards events after ``start_step``, or None without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(directory), purge_step=start_step + 1 if start_step else None)
