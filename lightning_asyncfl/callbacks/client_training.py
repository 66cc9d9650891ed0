"""What client jobs logged, aggregated per global version: ``client_training.csv`` and the loggers.

Every value a module's ``self.log`` sends during a client job travels with the update
(``update.metrics``). For each global version, over the updates the aggregator applied to
make it, :func:`client_means` gives two figures per name: ``client/NAME``, the mean over
those updates, and ``client/NAME_weighted``, the mean weighted by each update's number of
samples. :class:`ClientTrainingCSV` writes them to ``client_training.csv`` (one row per
version); :class:`~lightning_asyncfl.callbacks.LoggerCallback` sends them to every
configured logger at ``step=version``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_asyncfl.callbacks.files import CLIENT_PREFIX, _CSVWriter
from lightning_asyncfl.state import ClientUpdate


def client_means(updates: Sequence[ClientUpdate]) -> dict[str, float]:
    """``{"client/NAME": mean, "client/NAME_weighted": sample-weighted mean}`` over the updates that logged NAME."""
    sums: dict[str, float] = {}
    weighted: dict[str, float] = {}
    counts: dict[str, int] = {}
    samples: dict[str, int] = {}
    for update in updates:
        for name, value in update.metrics.items():
            sums[name] = sums.get(name, 0.0) + float(value)
            counts[name] = counts.get(name, 0) + 1
            weighted[name] = weighted.get(name, 0.0) + float(value) * update.num_samples
            samples[name] = samples.get(name, 0) + update.num_samples
    out: dict[str, float] = {}
    for name in sorted(sums):
        out[CLIENT_PREFIX + name] = sums[name] / counts[name]
        out[CLIENT_PREFIX + name + "_weighted"] = weighted[name] / samples[name] if samples[name] else sums[name] / counts[name]
    return out


class ClientTrainingCSV(_CSVWriter):
    """``client_training.csv``: one row per global version with :func:`client_means` of its updates.

    Args:
        path: the file.
        metrics: the names a client job logs (from the model check before the run).
    """

    def __init__(self, path: str | Path, metrics: Sequence[str] = ()) -> None:
        super().__init__(path)
        self.columns = ["version", "updates"] + [CLIENT_PREFIX + n + s for n in metrics for s in ("", "_weighted")]

    def on_aggregate(self, loop: Any, updates: Sequence[ClientUpdate], version: int) -> None:
        if len(self.columns) > 2:
            self._write({"version": version, "updates": len(updates), **client_means(updates)}, self.columns)
