"""Synchronous rounds (FedAvg's): a new cohort only once the previous one is closed.

Classic rounds (the defaults): ``clients_per_round`` random idle clients are dispatched
when nothing is in flight and the global version has advanced since the last round was
dispatched (the first round starts at version 0). When fewer clients are idle, all of them
are dispatched.

Cross-device rounds, as deployed (Bonawitz et al., "Towards Federated Learning at Scale:
System Design", MLSys 2019, https://arxiv.org/abs/1902.01046, Sec. 2.2: the server selects
about 130% of the target and closes the round when enough clients report or a deadline
passes):

- ``over_selection`` > 1 dispatches ``ceil(over_selection * clients_per_round)`` clients;
  the round closes once the aggregator has the first ``clients_per_round`` updates;
- ``deadline`` closes the round ``deadline`` virtual seconds after its dispatch: the loop
  aggregates what arrived in time (nothing, if none did: an empty round).

Either way the next round starts as soon as the round closes (clients still training are
busy, so not chosen), and an update of a closed round is rejected as ``late``: the
stragglers cost time and bytes and count for nothing, which is what real deployments see.

A classic round whose clients all failed, dropped out or were rejected is followed by a new
round at the same version (the loop's no-progress guard bounds how many).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lightning_asyncfl.errors import checking, positive_int, validate
from lightning_asyncfl.schedulers.base import Scheduler, require_at_most_clients
from lightning_asyncfl.state import ClientUpdate


class RoundScheduler(Scheduler):
    """Dispatch one cohort per round; classic rounds wait until no job is in flight.

    Args:
        clients_per_round: clients per round m (>= 1, <= the number of clients).
        over_selection: dispatch ``ceil(over_selection * m)`` clients (>= 1; 1: classic).
        deadline: virtual seconds after which a round closes (> 0; null: no deadline).
    """

    def __init__(self, *, clients_per_round: int = 10, over_selection: float = 1.0, deadline: float | None = None) -> None:
        super().__init__()
        with checking() as check:
            self.clients_per_round = validate(check, positive_int, "clients_per_round", clients_per_round)
            real = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
            check(real(over_selection) and over_selection >= 1, "over_selection", over_selection, "a finite number >= 1")
            check(deadline is None or (real(deadline) and deadline > 0), "deadline", deadline, "null or a finite number > 0")
        self.over_selection = float(over_selection)
        self.deadline = None if deadline is None else float(deadline)
        self._last_version = -1  # global version at which the last round was dispatched
        self._round_start = -math.inf  # virtual time of the last round's dispatch

    @property
    def closes_rounds(self) -> bool:
        """Whether rounds close early (over-selection or a deadline) rather than wait for every client."""
        return self.over_selection > 1 or self.deadline is not None

    @property
    def cohort(self) -> int:
        """Clients dispatched per round."""
        return math.ceil(self.over_selection * self.clients_per_round - 1e-9)

    def _setup(self, num_clients: int) -> None:
        require_at_most_clients("clients_per_round", self.clients_per_round, num_clients)

    def _deadline_passed(self, now: float) -> bool:
        return self.deadline is not None and now >= self._round_start + self.deadline

    def _select(
        self, now: float, idle: list[int], in_flight: list[int], version: int,
        rng: np.random.Generator,
    ) -> list[int]:
        if not idle:
            return []
        if self.closes_rounds:
            if version <= self._last_version and not self._deadline_passed(now):
                return []  # the round is open
        elif in_flight or version <= self._last_version:
            return []
        self._last_version, self._round_start = version, now
        return self._sample(idle, self.cohort, rng)

    def accepts(self, update: ClientUpdate, now: float) -> bool:
        if not self.closes_rounds:
            return True
        in_time = self.deadline is None or now <= self._round_start + self.deadline
        return update.staleness == 0 and update.job.dispatch_time >= self._round_start and in_time

    def flush_due(self, now: float) -> bool:
        return self._deadline_passed(now)

    def next_wakeup(self, now: float) -> float | None:
        if self.deadline is None or self._round_start == -math.inf:
            return None
        close = self._round_start + self.deadline
        return close if close > now else None

    def on_empty_round(self, now: float) -> bool:
        """The last round brought no new version: allow another round at this version."""
        self._last_version = -1
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"last_version": self._last_version, "round_start": self._round_start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._last_version = int(state["last_version"])
        self._round_start = float(state.get("round_start", -math.inf))

    def _repr_args(self) -> dict[str, Any]:
        return {"clients_per_round": self.clients_per_round, "over_selection": self.over_selection, "deadline": self.deadline}
