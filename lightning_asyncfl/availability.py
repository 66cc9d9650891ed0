"""Client availability: which clients the scheduler may dispatch, and which vanish mid-job.

Real federations are not always there: phones drop off the network, new clients keep
joining, devices train only at night. An :class:`Availability` (config group
``availability``) tells the loop

- which idle clients are available now (:meth:`Availability.filter`; the scheduler only
  ever sees those),
- when that set may grow again (:meth:`Availability.next_change`, a wake-up for the loop,
  so it never waits forever for clients that have gone), and
- whether a dispatched job's client vanishes before it finishes
  (:meth:`Availability.dropout_time`): its update never arrives; the loop frees the
  client at that moment and counts the job as ``dropped``.

Every draw comes from the run's availability stream or the job's own seed, so a run stays
deterministic. Presets: ``always`` (default), ``dropout``, ``check_in`` (the original
framework's client check-in: every ``interval`` seconds ``count`` more clients join) and
``windows`` (periodic unavailability).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lightning_asyncfl import seeding
from lightning_asyncfl.context import SetupContext
from lightning_asyncfl.errors import checking
from lightning_asyncfl.state import Job

#: slack for floating-point window boundaries (virtual seconds)
EPS = 1e-9


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Availability:
    """Every client is always available and finishes every job (``availability=always``).

    Subclasses override :meth:`filter`, :meth:`next_change`, :meth:`dropout_time` and, for
    state that changes during a run, :meth:`state_dict` / :meth:`load_state_dict`.
    """

    def setup(self, context: SetupContext | int, rng: np.random.Generator | None = None) -> None:
        """Prepare for the run's clients, drawing from the run's availability stream (a
        subclass writes :meth:`_setup`); ``setup(num_clients, rng)`` still works."""
        if isinstance(context, SetupContext):
            num_clients, rng = context.num_clients, context.stream(seeding.AVAILABILITY)
        else:
            num_clients = int(context)
        self.num_clients = int(num_clients)
        self._setup(rng)

    def _setup(self, rng: np.random.Generator | None) -> None:
        """Draw per-client values once :attr:`num_clients` is known (default: none)."""

    def filter(self, idle: list[int], now: float) -> list[int]:
        """The clients of ``idle`` (sorted) available at ``now``, still sorted; ``idle`` itself
        (no copy) when all are, as here."""
        return idle

    def next_change(self, now: float) -> float | None:
        """The next time after ``now`` at which a client may become available; None: never."""
        return None

    def dropout_time(self, job: Job) -> float | None:
        """The virtual time at which ``job``'s client vanishes (before its arrival), or None."""
        return None

    def on_dropout(self, job: Job, now: float) -> None:
        """Called when ``job``'s client vanished at ``now``."""

    def state_dict(self) -> dict[str, Any]:
        """State that changes during a run (plain values), for checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def _args(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in self._args().items()) + ")"


class Dropout(Availability):
    """Each job's client vanishes mid-job with probability ``p``; it is offline for ``offline`` seconds.

    The drop happens at a uniform point of the job's duration, drawn with the coin from
    the job's own seed and attempt; the update never arrives.

    Args:
        p: probability that a job drops out, in [0, 1].
        offline: virtual seconds the client stays unavailable after it vanished (>= 0).
    """

    def __init__(self, *, p: float = 0.1, offline: float = 0.0) -> None:
        with checking() as check:
            check(0 <= p <= 1, "p", p, "in [0, 1]")
            check(offline >= 0 and math.isfinite(offline), "offline", offline, "a finite number >= 0")
        self.p, self.offline = float(p), float(offline)
        self._back: dict[int, float] = {}  # client -> time it is available again

    def dropout_time(self, job: Job) -> float | None:
        if self.p == 0:
            return None
        coin, at = np.random.default_rng(np.random.SeedSequence([job.seed, seeding.AVAILABILITY, job.attempt])).random(2)
        if coin >= self.p:
            return None
        return job.dispatch_time + float(at) * (job.arrival_time - job.dispatch_time)

    def on_dropout(self, job: Job, now: float) -> None:
        if self.offline > 0:
            self._back[job.client_id] = now + self.offline

    def filter(self, idle: list[int], now: float) -> list[int]:
        self._back = {c: t for c, t in self._back.items() if t > now}
        return [c for c in idle if c not in self._back] if self._back else idle

    def next_change(self, now: float) -> float | None:
        later = [t for t in self._back.values() if t > now]
        return min(later) if later else None

    def state_dict(self) -> dict[str, Any]:
        return {"back": [[c, t] for c, t in sorted(self._back.items())]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._back = {int(c): float(t) for c, t in state.get("back", [])}

    def _args(self) -> dict[str, Any]:
        return {"p": self.p, "offline": self.offline}


class CheckIn(Availability):
    """Clients join over time: ``initial`` at the start, then ``count`` more every ``interval`` seconds.

    The joining order is a random permutation drawn once from the availability stream.
    Once joined, a client stays.

    Args:
        interval: virtual seconds between check-ins (> 0).
        count: clients that join at each check-in (>= 1).
        initial: clients available at time 0 (>= 0; null: ``count``).
    """

    def __init__(self, *, interval: float = 10.0, count: int = 5, initial: int | None = None) -> None:
        with checking() as check:
            check(interval > 0 and math.isfinite(interval), "interval", interval, "a finite number > 0")
            check(_is_int(count) and count >= 1, "count", count, "an integer >= 1")
            check(initial is None or (_is_int(initial) and initial >= 0), "initial", initial, "null or an integer >= 0")
        self.interval, self.count = float(interval), int(count)
        self.initial = self.count if initial is None else int(initial)
        self._rank = np.zeros(0, dtype=np.int64)

    def _setup(self, rng: np.random.Generator) -> None:
        num_clients = self.num_clients
        order = rng.permutation(num_clients)
        self._rank = np.empty(num_clients, dtype=np.int64)
        self._rank[order] = np.arange(num_clients)

    def joined(self, now: float) -> int:
        """How many clients have joined by ``now``."""
        ticks = math.floor(now / self.interval + EPS)
        return min(self.num_clients, self.initial + self.count * ticks)

    def filter(self, idle: list[int], now: float) -> list[int]:
        joined = self.joined(now)
        if joined >= self.num_clients:
            return idle
        rank = self._rank
        return [c for c in idle if rank[c] < joined]

    def next_change(self, now: float) -> float | None:
        if self.joined(now) >= self.num_clients:
            return None
        return (math.floor(now / self.interval + EPS) + 1) * self.interval

    def _args(self) -> dict[str, Any]:
        return {"interval": self.interval, "count": self.count, "initial": self.initial}


class Windows(Availability):
    """Periodic unavailability: each affected client is away ``duration`` seconds of every ``period``.

    Each affected client has its own phase, uniform in [0, period), so they are not all
    away at once (devices in different time zones). Jobs already running finish.

    Args:
        period: length of the cycle in virtual seconds (> 0).
        duration: seconds of each cycle the client is unavailable, in [0, period).
        fraction: share of the clients that have windows, in [0, 1].
    """

    def __init__(self, *, period: float = 100.0, duration: float = 50.0, fraction: float = 1.0) -> None:
        with checking() as check:
            check(period > 0 and math.isfinite(period), "period", period, "a finite number > 0")
            check(0 <= duration < period, "duration", duration, f"in [0, period={period})")
            check(0 <= fraction <= 1, "fraction", fraction, "in [0, 1]")
        self.period, self.duration, self.fraction = float(period), float(duration), float(fraction)
        self._phase = np.zeros(0)

    def _setup(self, rng: np.random.Generator) -> None:
        num_clients = self.num_clients
        phase = rng.uniform(0.0, self.period, size=num_clients)
        affected = rng.random(num_clients) < self.fraction
        self._phase = np.where(affected, phase, np.nan)  # NaN: never away

    def _position(self, now: float) -> np.ndarray:
        return np.mod(now + self._phase, self.period)

    def filter(self, idle: list[int], now: float) -> list[int]:
        away = self._position(now) < self.duration - EPS  # NaN compares False: available
        return [c for c in idle if not away[c]]

    def next_change(self, now: float) -> float | None:
        position = self._position(now)
        away = position < self.duration - EPS
        if not away.any():
            return None
        return float(now + np.min(self.duration - position[away]))

    def _args(self) -> dict[str, Any]:
        return {"period": self.period, "duration": self.duration, "fraction": self.fraction}
