"""The original framework's scheduler: a timer that dispatches a fraction of idle clients.

At virtual times ``0, interval, 2*interval, ...`` it dispatches ``max(1, int(fraction *
len(idle)))`` clients drawn at random from those idle (none when none is idle). Between
ticks it dispatches nothing; a tick with no idle client is spent all the same.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lightning_asyncfl.errors import checking, positive, probability, validate
from lightning_asyncfl.schedulers.base import Scheduler


class RandomIntervalScheduler(Scheduler):
    """Every ``interval`` virtual seconds, dispatch a random ``fraction`` of the idle clients.

    Args:
        interval: virtual seconds between ticks (> 0).
        fraction: share of the idle clients dispatched at a tick, in (0, 1]; at least one.
    """

    def __init__(self, *, interval: float = 5.0, fraction: float = 0.1) -> None:
        super().__init__()
        with checking() as check:
            self.interval = validate(check, positive, "interval", interval)
            self.fraction = validate(check, probability, "fraction", fraction, open_low=True)
        self._tick = 0  # index of the next tick not yet fired; it fires at _tick * interval

    def _select(
        self, now: float, idle: list[int], in_flight: list[int], version: int,
        rng: np.random.Generator,
    ) -> list[int]:
        if now < self._tick * self.interval:
            return []
        # The first tick strictly after now (robust to rounding in now / interval).
        tick = max(self._tick + 1, math.floor(now / self.interval) + 1)
        while tick * self.interval <= now:
            tick += 1
        self._tick = tick
        if not idle:
            return []
        return self._sample(idle, max(1, int(self.fraction * len(idle))), rng)

    def next_wakeup(self, now: float) -> float | None:
        """The next tick not yet fired: strictly after ``now`` once the current one fired."""
        return self._tick * self.interval

    def state_dict(self) -> dict[str, Any]:
        return {"next_tick": self._tick}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._tick = int(state["next_tick"])

    def _repr_args(self) -> dict[str, Any]:
        return {"interval": self.interval, "fraction": self.fraction}
