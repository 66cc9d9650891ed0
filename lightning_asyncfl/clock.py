"""The loop's clock: one event loop, two sources of time.

The loop asks its clock for the next :class:`Event` and handles it the same way whatever
the clock:

- :class:`VirtualClock` (``clock=virtual``, the default): the next event is the earlier of
  the first job event on the in-flight heap and the scheduler's (or the availability's)
  next wake-up. Wall-clock time never enters a decision, so a seed fixes the run bit for
  bit.
- :class:`WallClock` (``clock=wall``, systems experiments on real hardware): time is
  wall-clock seconds since the start; a job arrives once it has really finished *and* its
  delay has really passed (the delay is slept), in the order jobs really finish. Not
  deterministic.

Both keep a stopwatch of the run's wall time (``wall_time`` in metrics and the summary).
"""

from __future__ import annotations

import abc
import time
from typing import NamedTuple

from lightning_asyncfl.executors.base import Executor
from lightning_asyncfl.inflight import InFlight
from lightning_asyncfl.state import Job

ARRIVAL, WAKE, IDLE, MAX_TIME = "arrival", "wake", "idle", "max_time"


class Event(NamedTuple):
    """What happens next: a job's ``arrival`` (or its client's drop) at ``time``, a ``wake``-up
    at ``time``, ``idle`` (nothing in flight, nothing to wake for) or ``max_time`` reached."""

    kind: str
    time: float = 0.0
    job: Job | None = None


class Clock(abc.ABC):
    """The run's time source and its stopwatch of wall time."""

    #: whether events are handled in (time, job id) order from the in-flight heap
    ordered = True

    def __init__(self) -> None:
        self._wall_start = time.perf_counter()

    def start(self, elapsed: float = 0.0) -> None:
        """Start the stopwatch (``elapsed`` seconds already run, for a resumed run)."""
        self._wall_start = time.perf_counter() - elapsed

    @property
    def wall_time(self) -> float:
        """Seconds of wall-clock time since the run started."""
        return time.perf_counter() - self._wall_start

    def now(self, now: float) -> float:
        """The time to dispatch at, given the loop's time ``now``."""
        return now

    @abc.abstractmethod
    def next_event(self, now: float, inflight: InFlight, wake: float | None, max_time: float | None, executor: Executor) -> Event | None:
        """The next event after ``now``; None when nothing happened yet (ask again)."""


class VirtualClock(Clock):
    """Virtual time: events in (time, job id) order, no waiting."""

    def next_event(self, now: float, inflight: InFlight, wake: float | None, max_time: float | None, executor: Executor) -> Event | None:
        first = inflight.next_event()
        if first is None and wake is None:
            return Event(IDLE, now)
        if wake is not None and (first is None or wake < first[0]):
            if max_time is not None and wake > max_time:
                return Event(MAX_TIME, max_time)
            return Event(WAKE, wake)
        arrival, job = first  # type: ignore[misc]
        if max_time is not None and arrival > max_time:
            return Event(MAX_TIME, max_time)
        return Event(ARRIVAL, arrival, job)


class WallClock(Clock):
    """Wall-clock time: a job arrives once trained and its (slept) delay is over."""

    ordered = False

    #: longest wait for a job to finish before the loop asks the scheduler again (seconds)
    POLL = 0.5

    def now(self, now: float) -> float:
        return max(now, self.wall_time)

    def next_event(self, now: float, inflight: InFlight, wake: float | None, max_time: float | None, executor: Executor) -> Event | None:
        now = self.now(now)
        if max_time is not None and now >= max_time:
            return Event(MAX_TIME, now)
        horizon = min((t for t in (wake, max_time) if t is not None), default=None)
        if not inflight.jobs:
            if wake is None:
                return Event(IDLE, now)
            time.sleep(max(0.0, horizon - self.wall_time))  # type: ignore[operator]
            return Event(WAKE, self.now(now))
        at = self.wall_time
        due = [job for job in inflight.jobs.values() if job.job_id in inflight.dropping and job.arrival_time <= at]
        if not due:
            timeout = self.POLL if horizon is None else max(0.0, min(self.POLL, horizon - at))
            trained = [job for job in inflight.jobs.values() if job.job_id not in inflight.dropping]
            finished = executor.wait(trained, timeout)
            at = self.wall_time
            due = [job for job in finished if job.arrival_time <= at]
            if not due:
                if finished:  # trained, but its (real) delay is not over yet
                    until = min(job.arrival_time for job in finished)
                    time.sleep(max(0.0, min(until, horizon if horizon is not None else until) - at))
                return None
        job = min(due, key=lambda j: (j.arrival_time, j.job_id))
        return Event(ARRIVAL, max(now, at), job)


def make_clock(name: str) -> Clock:
    """The clock called ``name`` (``virtual`` or ``wall``)."""
    return WallClock() if name == "wall" else VirtualClock()
