"""ProgressBar: global versions, client updates, virtual time and the latest accuracy."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

from lightning_asyncfl.callbacks.base import Callback


class ProgressBar(Callback):
    """A tqdm bar over the run's ``max_steps`` global versions (on stderr)."""

    def __init__(self) -> None:
        self._bar: tqdm | None = None
        self._accuracy: float | None = None

    def on_run_start(self, loop: Any) -> None:
        self._bar = tqdm(total=loop.max_steps, initial=loop.version, desc="global versions", unit="v", file=sys.stderr, dynamic_ncols=True, leave=True)

    def on_aggregate(self, loop: Any, updates: Any, version: int) -> None:
        if self._bar is not None:
            self._bar.update(version - self._bar.n)
            postfix = {"updates": loop.counts["arrived"], "t": f"{loop.now:.1f}"}
            if self._accuracy is not None:
                postfix["acc"] = f"{self._accuracy:.3f}"
            self._bar.set_postfix(postfix, refresh=False)

    def on_evaluate(self, loop: Any, version: int, metrics: dict[str, float]) -> None:
        self._accuracy = metrics.get("test_accuracy", self._accuracy)

    def on_run_end(self, loop: Any, summary: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
