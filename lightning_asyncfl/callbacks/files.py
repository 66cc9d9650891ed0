"""Callbacks that write the run's files as it goes: ``metrics.csv`` and ``updates.csv``.

Rows are flushed as they are written, so a run that dies keeps everything up to then.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from lightning_asyncfl.callbacks.base import Callback
from lightning_asyncfl.state import ClientUpdate, Job

UPDATE_COLUMNS = [
    "job_id", "attempt", "client_id", "base_version", "version", "staleness", "dispatch_time",
    "arrival_time", "num_samples", "examples", "download_time", "compute_time", "upload_time",
    "download_bytes", "upload_bytes", "status", "detail", "metrics",
]  # fmt: skip


class _CSVWriter(Callback):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: IO[str] | None = None
        self._writer: csv.DictWriter | None = None
        self._columns: list[str] = []

    def _write(self, row: dict[str, Any], columns: Sequence[str]) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", newline="")
            self._columns = list(columns)
            self._writer = csv.DictWriter(self._file, fieldnames=self._columns, extrasaction="ignore")
            self._writer.writeheader()
        self._writer.writerow(row)
        self._file.flush()

    def state_dict(self) -> dict[str, Any]:
        """How many bytes of the file belong to the run so far, and its columns."""
        return {"bytes": self._file.tell() if self._file is not None else 0, "columns": list(self._columns)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the file of a resumed run: drop rows written after the checkpoint, append after them."""
        size = int(state.get("bytes", 0))
        if size == 0:
            return
        have = self.path.stat().st_size if self.path.exists() else 0
        if have < size:
            raise ValueError(f"{self.path} has {have} bytes, the checkpoint's run had written {size}: it was changed or removed")
        self._file = self.path.open("r+", newline="")
        self._file.truncate(size)
        self._file.seek(size)
        self._columns = list(state["columns"])
        self._writer = csv.DictWriter(self._file, fieldnames=self._columns, extrasaction="ignore")

    def on_run_end(self, loop: Any, summary: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.close()
            self._file, self._writer = None, None


class UpdatesCSV(_CSVWriter):
    """``updates.csv``: one row per arrived job, accepted or why not; failed attempts that
    are retried (``retried``) and jobs whose client vanished (``dropped``) get rows too."""

    def on_retry(self, loop: Any, job: Job, detail: str) -> None:
        self._row(loop, job, "retried", detail, None)

    def on_dropout(self, loop: Any, job: Job) -> None:
        self._row(loop, job, "dropped", "the client vanished before its update arrived", None)

    def on_update_received(self, loop: Any, update: ClientUpdate) -> None:
        self._row(loop, update.job, "accepted", "", update)

    def on_update_rejected(self, loop: Any, job: Job, reason: str, detail: str, update: ClientUpdate | None) -> None:
        self._row(loop, job, reason, detail, update)

    def _row(self, loop: Any, job: Job, status: str, detail: str, update: ClientUpdate | None) -> None:
        row = {
            "job_id": job.job_id,
            "attempt": job.attempt,
            "client_id": job.client_id,
            "base_version": job.base_version,
            "version": loop.version,
            "staleness": loop.version - job.base_version,
            "dispatch_time": job.dispatch_time,
            "arrival_time": job.arrival_time,
            "num_samples": loop.num_samples[job.client_id],
            "examples": job.examples,
            "download_time": job.download_time,
            "compute_time": job.compute_time,
            "upload_time": job.upload_time,
            "download_bytes": job.download_bytes,
            "upload_bytes": job.upload_bytes,
            "status": status,
            "detail": detail,
            "metrics": json.dumps(update.metrics, sort_keys=True) if update is not None else "",
        }
        self._write(row, UPDATE_COLUMNS)


class MetricsCSV(_CSVWriter):
    """``metrics.csv``: one row per evaluation of the global model."""

    def on_evaluate(self, loop: Any, version: int, metrics: dict[str, float]) -> None:
        row = loop.history[-1]
        self._write(row, list(row))
