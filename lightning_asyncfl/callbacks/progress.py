"""ProgressBar: global versions, client updates, virtual time and the latest accuracy."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

from lightning_asyncfl.callbacks.base import Callback


class ProgressBar(Callback):
    """A tqdm bar over the run's ``max_steps`` global versions (on stderr), e.g.
    ``global versions: 40%|████      | 400/1000 [00:01<00:01, 310v/s, updates=402, t=31.7, acc=0.912]``.

    ``updates`` counts the client updates that arrived, ``t`` is the virtual time and
    ``acc`` the test accuracy of the latest evaluation. ``progress=false`` leaves it out.
    """

    def __init__(self) -> None:
        self._bar: tqdm | None = None
        self._accuracy: float | None = None

    def on_run_start(self, loop: Any) -> None:
        self._bar = tqdm(total=loop.max_steps, initial=loop.version, desc="global versions", unit="v", file=sys.stderr, dynamic_ncols=True, leave=True)

    def on_aggregate(self, loop: Any, updates: Any, version: int) -> None:
        if self._bar is not None:
            self._show(loop, refresh=False)  # before update(), which redraws the bar with it
            self._bar.update(version - self._bar.n)

    def on_evaluate(self, loop: Any, version: int, metrics: dict[str, float]) -> None:
        self._accuracy = metrics.get("test_accuracy", self._accuracy)
        if self._bar is not None:
            self._show(loop, refresh=True)  # the final evaluation comes after the last aggregation

    def _show(self, loop: Any, refresh: bool) -> None:
        postfix = {"updates": loop.counts["arrived"], "t": f"{loop.now:.1f}"}
        if self._accuracy is not None:
            postfix["acc"] = f"{self._accuracy:.3f}"
        self._bar.set_postfix(postfix, refresh=refresh)

    def on_run_end(self, loop: Any, summary: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
