"""Synchronous rounds (FedAvg's): a new cohort only once the previous one is aggregated.

``clients_per_round`` random idle clients are dispatched when nothing is in flight and
the global version has advanced since the last round was dispatched (the first round
starts at version 0). When fewer clients are idle, all of them are dispatched. A round
whose clients all failed, dropped out or were rejected is followed by a new round at the
same version (the loop's no-progress guard bounds how many).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lightning_asyncfl.schedulers.base import Scheduler, positive_int, require_at_most_clients


class RoundScheduler(Scheduler):
    """Dispatch one cohort per global version, only when no job is in flight.

    Args:
        clients_per_round: clients per round (>= 1, <= the number of clients).
    """

    def __init__(self, *, clients_per_round: int = 10) -> None:
        super().__init__()
        self.clients_per_round = positive_int("clients_per_round", clients_per_round)
        self._last_version = -1  # global version at which the last round was dispatched

    def _setup(self, num_clients: int) -> None:
        require_at_most_clients("clients_per_round", self.clients_per_round, num_clients)

    def _select(
        self, now: float, idle: list[int], in_flight: list[int], version: int,
        rng: np.random.Generator,
    ) -> list[int]:
        if in_flight or version <= self._last_version or not idle:
            return []
        self._last_version = version
        return self._sample(idle, self.clients_per_round, rng)

    def on_empty_round(self, now: float) -> bool:
        """The last round brought no new version: allow another round at this version."""
        self._last_version = -1
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"last_version": self._last_version}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._last_version = int(state["last_version"])

    def _repr_args(self) -> dict[str, Any]:
        return {"clients_per_round": self.clients_per_round}
