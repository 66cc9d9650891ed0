"""The scheduler decides which idle clients start a job, and when.

The loop asks :meth:`Scheduler.schedule` at the start of a run and after every event, and
again at :meth:`Scheduler.next_wakeup` when the scheduler wants to be woken without an
event (a timer). The base class owns the shared part (argument normalisation, checking
what the subclass returns, random sampling of idle clients); a scheduler writes one small
:meth:`Scheduler._select`.
"""

from __future__ import annotations

import abc
import bisect
from collections.abc import Sequence
from numbers import Integral
from typing import Any

import numpy as np

from lightning_asyncfl.state import ClientUpdate, Job

from lightning_asyncfl.context import SetupContext
from lightning_asyncfl.errors import positive_int, require

__all__ = ["Scheduler", "positive_int", "require_at_most_clients"]  # positive_int: user schedulers import it from here


class Scheduler(abc.ABC):
    """Chooses which idle clients to dispatch at each virtual time it is asked.

    Subclasses write :meth:`_select`; they may override :meth:`_setup` to check their
    values against the number of clients, :meth:`next_wakeup` for a timer, and
    :meth:`state_dict` / :meth:`load_state_dict` for state that must survive a checkpoint.
    """

    def __init__(self) -> None:
        self._num_clients: int | None = None

    @property
    def num_clients(self) -> int:
        """Number of clients given to :meth:`setup`."""
        if self._num_clients is None:
            raise RuntimeError(f"{type(self).__name__}.setup(context) must be called first")
        return self._num_clients

    def setup(self, context: SetupContext | int) -> None:
        """Prepare for a run; called once before it (a subclass writes :meth:`_setup`).

        Args:
            context: the run's :class:`~lightning_asyncfl.context.SetupContext` (an
                integer, the number of clients, is accepted too).

        Raises:
            InvalidValue: when the scheduler's values do not fit the number of clients.
        """
        num_clients = context.num_clients if isinstance(context, SetupContext) else context
        valid = isinstance(num_clients, Integral) and not isinstance(num_clients, bool)
        if not valid or num_clients < 1:
            raise ValueError(f"num_clients must be an integer >= 1, got {num_clients!r}")
        self._setup(int(num_clients))
        self._num_clients = int(num_clients)

    def schedule(
        self,
        now: float,
        idle: Sequence[int],
        in_flight: Sequence[int],
        version: int,
        rng: np.random.Generator,
    ) -> list[int]:
        """Client ids to dispatch at virtual time ``now``.

        Args:
            now: the current virtual time.
            idle: available clients not in flight, sorted ascending. It is the loop's own
                list (no copy per event, which matters with 100,000 clients): read it, do
                not modify it; copy it to keep it.
            in_flight: clients with a job in flight.
            version: the current global model version.
            rng: the run's system stream; every random choice draws from it.

        Returns:
            Distinct client ids taken from ``idle``, sorted ascending (possibly empty).
        """
        idle_ids = idle if type(idle) is list else [int(c) for c in idle]
        chosen = [int(c) for c in self._select(float(now), idle_ids, [int(c) for c in in_flight],
                                               int(version), rng)]
        if len(set(chosen)) != len(chosen) or not _all_idle(chosen, idle_ids):
            raise RuntimeError(
                f"{self!r} chose clients {chosen} at time {now}: they must be distinct "
                f"and idle (idle: {idle_ids})"
            )
        return sorted(chosen)

    def next_wakeup(self, now: float) -> float | None:
        """The next virtual time at which to be asked even if nothing arrives.

        Returns:
            A time (normally > ``now``), or None to be asked only after events (default).
        """
        return None

    def on_arrival(self, job: Job, now: float) -> None:
        """Called by the loop when ``job`` arrives (accepted, rejected or failed); default: nothing.

        Lets a scheduler learn from what happened, e.g. profile client speeds from
        ``job.arrival_time - job.dispatch_time``.
        """

    def on_empty_round(self, now: float) -> bool:
        """Called when nothing is in flight, nothing is buffered and this scheduler dispatched
        nothing: a round came back empty (its clients all failed, dropped out or were rejected).

        Returns:
            True to be asked again at once (a synchronous scheduler starts a new round);
            False (default) ends the run as failed, since it cannot go on.
        """
        return False

    def accepts(self, update: ClientUpdate, now: float) -> bool:
        """Whether ``update``, arriving at ``now``, still counts (default: always).

        A synchronous round that closed (over-selection, a deadline) refuses its stragglers:
        the loop rejects them as ``late``.
        """
        return True

    def flush_due(self, now: float) -> bool:
        """Whether the loop should aggregate what the buffer holds now, at a wake-up (a round's deadline); default: never."""
        return False

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state as plain values, for checkpoints (default: none)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state returned by :meth:`state_dict`."""
        if state:
            name = type(self).__name__
            raise ValueError(f"{name} has no state to load, got keys {sorted(state)}")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._repr_args().items())
        return f"{type(self).__name__}({args})"

    # -- subclass hooks ---------------------------------------------------------------

    def _setup(self, num_clients: int) -> None:
        """Check the scheduler's values against ``num_clients`` (default: nothing to check)."""

    @abc.abstractmethod
    def _select(
        self,
        now: float,
        idle: list[int],
        in_flight: list[int],
        version: int,
        rng: np.random.Generator,
    ) -> list[int]:
        """Client ids to dispatch; the arguments are those of :meth:`schedule`, as plain values."""

    def _repr_args(self) -> dict[str, Any]:
        """Constructor arguments shown by ``repr``."""
        return {}

    # -- helpers ----------------------------------------------------------------------

    @staticmethod
    def _sample(idle: list[int], k: int, rng: np.random.Generator) -> list[int]:
        """``k`` distinct clients drawn at random from ``idle``, sorted ascending."""
        k = min(k, len(idle))
        if k <= 0:
            return []
        # positions, not values: the same draws as rng.choice(idle, ...) without turning a
        # list of 100,000 clients into an array at every event
        return sorted(int(idle[i]) for i in rng.choice(len(idle), size=k, replace=False))


def _all_idle(chosen: list[int], idle: Sequence[int]) -> bool:
    """Whether every chosen client is in ``idle``: a binary search each in the ascending
    list the loop passes, a full check only when that fails (an unsorted list)."""

    def found(value: int) -> bool:
        at = bisect.bisect_left(idle, value)
        return at < len(idle) and idle[at] == value

    return all(found(c) for c in chosen) or set(chosen) <= {int(c) for c in idle}


def require_at_most_clients(key: str, value: int, num_clients: int) -> None:
    """Raise :class:`InvalidValue` unless ``value`` <= ``num_clients``."""
    require(value <= num_clients, key, value, f"<= the number of clients ({num_clients})")
