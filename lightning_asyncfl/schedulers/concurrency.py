"""Semi-asynchronous dispatch (FedBuff's): keep a fixed number of clients in flight.

Whenever fewer than ``concurrency`` jobs are in flight, random idle clients are
dispatched to top it up: ``min(concurrency - len(in_flight), len(idle))`` of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lightning_asyncfl.errors import positive_int
from lightning_asyncfl.schedulers.base import Scheduler, require_at_most_clients


class ConcurrencyScheduler(Scheduler):
    """Keep ``concurrency`` clients training at all times.

    Args:
        concurrency: number of jobs in flight (>= 1, <= the number of clients).
    """

    def __init__(self, *, concurrency: int = 10) -> None:
        super().__init__()
        self.concurrency = positive_int("concurrency", concurrency)

    def _setup(self, num_clients: int) -> None:
        require_at_most_clients("concurrency", self.concurrency, num_clients)

    def _select(
        self, now: float, idle: list[int], in_flight: list[int], version: int,
        rng: np.random.Generator,
    ) -> list[int]:
        return self._sample(idle, self.concurrency - len(in_flight), rng)

    def _repr_args(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency}
