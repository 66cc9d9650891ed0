"""Callbacks that write the run's files as it goes: ``metrics.csv`` and ``updates.csv``.

Rows are flushed as they are written, so a run that dies keeps everything up to then.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from lightning_asyncfl.callbacks.base import Callback
from lightning_asyncfl.state import ClientUpdate, Job

log = logging.getLogger(__name__)

UPDATE_COLUMNS = [
    "job_id", "attempt", "client_id", "base_version", "version", "staleness", "dispatch_time",
    "arrival_time", "num_samples", "examples", "download_time", "compute_time", "upload_time",
    "download_bytes", "upload_bytes", "status", "detail",
]  # fmt: skip
#: prefix of the columns (and logger keys) of what a client job logged with ``self.log``
CLIENT_PREFIX = "client/"


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
    are retried (``retried``) and jobs whose client vanished (``dropped``) get rows too.

    Args:
        path: the file.
        metrics: the names a client job logs (found by the model check before the run);
            each is a column ``client/NAME`` holding the update's value (empty when it has none).
    """

    def __init__(self, path: str | Path, metrics: Sequence[str] = ()) -> None:
        super().__init__(path)
        self.metric_columns = [CLIENT_PREFIX + name for name in metrics]
        self._unexpected: set[str] = set()

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
        }
        if update is not None:
            row.update((CLIENT_PREFIX + name, value) for name, value in update.metrics.items())
            self._warn_unexpected(update.metrics)
        self._write(row, UPDATE_COLUMNS + self.metric_columns)

    def _warn_unexpected(self, metrics: dict[str, float]) -> None:
        new = {CLIENT_PREFIX + name for name in metrics} - set(self.metric_columns) - self._unexpected
        if new:
            self._unexpected |= new
            log.warning("updates.csv has no column for %s (not logged in the trial job before the run); the loggers' client/ means have it", ", ".join(sorted(new)))


class MetricsCSV(_CSVWriter):
    """``metrics.csv``: one row per evaluation of the global model."""

    def on_evaluate(self, loop: Any, version: int, metrics: dict[str, float]) -> None:
        row = dict(loop.last_metrics)
        self._write(row, list(row))


CLIENT_COLUMNS = ["version", "client_id", "num_samples", "loss", "accuracy"]


class ClientMetricsCSV(_CSVWriter):
    """``client_metrics.csv``: one row per client at every per-client evaluation (the full vectors).

    Args:
        path: the file to write.
        evaluator: the per-client evaluator whose latest vectors (``last``) are written.
    """

    def __init__(self, path: str | Path, evaluator: Any) -> None:
        super().__init__(path)
        self.evaluator = evaluator
        self._written = -1

    def on_evaluate(self, loop: Any, version: int, metrics: dict[str, float]) -> None:
        self._flush_latest()

    def on_run_end(self, loop: Any, summary: dict[str, Any]) -> None:
        self._flush_latest()  # the final model's vectors when the last evaluation had none
        super().on_run_end(loop, summary)

    def _flush_latest(self) -> None:
        last = self.evaluator.last
        if last is None or last[0] == self._written:
            return
        version, per_client = last
        for k, n in enumerate(per_client["num_samples"]):
            row = {"version": version, "client_id": k, "num_samples": int(n), "loss": float(per_client["loss"][k]), "accuracy": float(per_client["accuracy"][k])}
            self._write(row, CLIENT_COLUMNS)
        self._written = version

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "written": self._written}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._written = int(state.get("written", -1))
