"""InFlight: the jobs dispatched and not yet arrived, their events in order, and the model versions they train from.

Each job in flight holds its base version in a reference-counted
:class:`~lightning_asyncfl.snapshots.Snapshots` (memory grows with the distinct versions
still in flight, never with the number of clients); the version is let go when its last
job arrives. A job whose client will vanish (the availability model's dropout) trains
nothing: its event is the drop.

With an ordered clock (virtual time) every job's event is on a heap, handled in (event
time, job id) order; with the wall clock, events come in the order jobs really finish and
there is no heap.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Mapping
from typing import Any

from lightning_asyncfl.snapshots import Snapshots
from lightning_asyncfl.state import Job, ModelState


class InFlight:
    """Jobs in flight, their event heap and the base versions they hold.

    Args:
        ordered: keep a heap of events in (time, job id) order (the virtual clock).
    """

    def __init__(self, *, ordered: bool = True) -> None:
        self.ordered = ordered
        self.jobs: dict[int, Job] = {}
        self.arrivals: list[tuple[float, int]] = []  # heap of (event time, job id)
        self.dropping: set[int] = set()  # jobs whose client vanishes: their event is the drop
        self.snapshots: Snapshots[int, ModelState] = Snapshots()  # version -> state, held by the jobs training from it
        self.peak_snapshots = 0

    def __len__(self) -> int:
        return len(self.jobs)

    def start(self, job: Job, current: ModelState, version: int, drop: float | None) -> ModelState | None:
        """Put ``job`` in flight; returns the base state it trains from, or None when its client
        drops out at ``drop`` (nothing to train). ``current`` is the global model of ``version``."""
        self.jobs[job.job_id] = job
        if drop is not None:
            self.dropping.add(job.job_id)
            if self.ordered:
                heapq.heappush(self.arrivals, (drop, job.job_id))
            else:
                self.jobs[job.job_id] = dataclasses.replace(job, arrival_time=drop)
            return None
        if self.ordered:
            heapq.heappush(self.arrivals, (job.arrival_time, job.job_id))

        def held_now() -> ModelState:
            if job.base_version != version:
                raise RuntimeError(f"job {job.job_id} starts from version {job.base_version}, which is no longer held")
            return current

        base = self.snapshots.hold(job.base_version, held_now)
        self.peak_snapshots = max(self.peak_snapshots, len(self.snapshots))
        return base

    def base(self, version: int, current: ModelState) -> ModelState:
        """The state of ``version`` if a job holds it, else ``current``."""
        return self.snapshots.get(version, current)

    def next_event(self) -> tuple[float, Job] | None:
        """The earliest event on the heap (time, job), or None."""
        if not self.arrivals:
            return None
        time, job_id = self.arrivals[0]
        return time, self.jobs[job_id]

    def pop(self, job: Job) -> Job:
        """Take ``job`` out of flight (its event is being handled); the first on the heap when ordered."""
        if self.ordered:
            time, job_id = heapq.heappop(self.arrivals)
            if job_id != job.job_id:
                raise RuntimeError(f"job {job.job_id} arrives out of order: the next event is job {job_id}'s at {time}")
        return self.jobs.pop(job.job_id)

    def dropped(self, job: Job) -> bool:
        """Whether ``job``'s event is its client's drop; forgets it (the drop is being handled)."""
        if job.job_id in self.dropping:
            self.dropping.discard(job.job_id)
            return True
        return False

    def release(self, job: Job) -> ModelState:
        """``job`` lets go of its base version; returns that state."""
        return self.snapshots.release(job.base_version)

    def clients(self) -> list[int]:
        """Ids of the clients in flight, sorted."""
        return sorted(job.client_id for job in self.jobs.values())

    # -- checkpoints ---------------------------------------------------------------
    def to_plain(self) -> dict[str, Any]:
        """Jobs, events, drops and holds as plain values (the held states are stored by the run state, once per version)."""
        return {
            "holds": self.snapshots.counts(),
            "jobs": [job.to_plain() for _, job in sorted(self.jobs.items())],
            "arrivals": [list(a) for a in self.arrivals],
            "dropping": sorted(self.dropping),
        }

    def load_plain(self, plain: Mapping[str, Any], states: Mapping[int, ModelState], peak_snapshots: int) -> None:
        """Restore :meth:`to_plain`, with ``states`` the model of each held version."""
        self.snapshots.clear()
        for version, count in plain["holds"].items():
            self.snapshots.restore(int(version), states[int(version)], int(count))
        self.jobs = {job.job_id: job for job in map(Job.from_plain, plain["jobs"])}
        self.arrivals = [(float(t), int(j)) for t, j in plain["arrivals"]]
        heapq.heapify(self.arrivals)
        self.dropping = {int(j) for j in plain["dropping"]}
        self.peak_snapshots = int(peak_snapshots)
