"""Availability from FedScale's client behaviour trace: devices come and go as they did.

FedScale's behaviour trace (``client_behave_trace``; Lai et al., ICML 2022,
https://arxiv.org/abs/2105.11367, from a large-scale user behaviour study) maps each
client to ``{"active": [a_0, a_1, ...], "inactive": [i_0, i_1, ...], "finish_time": T}``:
the client is online during each ``[a_j, i_j)`` and the pattern repeats every ``T``
seconds, as FedScale's ``is_active`` reads it (online iff ``a_j <= t mod T <= i_j`` for
some j; here the end instant ``i_j`` itself is offline, since a job started then would
have no time at all). Client k follows the trace's entry ``k % len(trace)`` in file order, as FedScale
maps its clients.

Here a client is dispatched only while online, and a job whose client goes offline before
its update arrives is lost: the loop counts it as ``dropped`` at the moment the client
left.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np

from lightning_asyncfl.availability import EPS, Availability
from lightning_asyncfl.errors import InvalidValue
from lightning_asyncfl.state import Job
from lightning_asyncfl.system.traces import finite, read_trace

__all__ = ["FedScaleAvailability"]


class _Pattern:
    """One trace entry: online intervals within a period that repeats."""

    def __init__(self, active: list[float], inactive: list[float], period: float) -> None:
        self.active, self.inactive, self.period = active, inactive, period

    def online_until(self, t: float) -> float | None:
        """The end of the online interval holding ``t``, or None when offline at ``t``.

        At the very end of an interval a client has no time left: it counts as offline
        there, so a job never starts (and drops) at the instant its client leaves.
        """
        base = math.floor(t / self.period) * self.period
        x = t - base
        j = bisect.bisect_right(self.active, x + EPS) - 1
        if j >= 0 and x < self.inactive[j] - EPS:
            return base + self.inactive[j]
        return None

    def next_online(self, t: float) -> float:
        """The first time > ``t`` at which an online interval starts."""
        base = math.floor(t / self.period) * self.period
        j = bisect.bisect_right(self.active, t - base + EPS)
        return base + self.active[j] if j < len(self.active) else base + self.period + self.active[0]


class FedScaleAvailability(Availability):
    """Clients online and offline as FedScale's behaviour trace says (``availability=fedscale``).

    Args:
        file: the trace: FedScale's pickle (read without running code), or the same
            mapping as JSON.
    """

    def __init__(self, *, file: str) -> None:
        self.file = str(file)
        self.patterns = self._read(self.file)  # fails before any training
        self._clients: list[_Pattern] = []

    @staticmethod
    def _read(file: str) -> list[_Pattern]:
        trace = read_trace(file)
        if not isinstance(trace, dict) or not trace:
            raise InvalidValue("file", file, "a non-empty mapping client id -> {active, inactive, finish_time}")
        patterns = []
        for cid, entry in trace.items():
            if not isinstance(entry, dict) or not {"active", "inactive", "finish_time"} <= set(entry):
                raise InvalidValue("file", file, f"entries with active, inactive and finish_time (entry {cid!r} has {sorted(entry) if isinstance(entry, dict) else entry!r})")
            period = finite(f"file[{cid}].finish_time", entry["finish_time"], positive=True)
            active = [finite(f"file[{cid}].active", a) for a in entry["active"]]
            inactive = [finite(f"file[{cid}].inactive", i) for i in entry["inactive"]]
            ordered = all(a <= i for a, i in zip(active, inactive)) and all(i <= a for i, a in zip(inactive, active[1:]))
            if not active or len(active) != len(inactive) or not ordered or inactive[-1] > period:
                raise InvalidValue("file", file, f"for each client as many active as inactive times, in order, within finish_time (entry {cid!r} is not)")
            patterns.append(_Pattern(active, inactive, period))
        return patterns

    def _setup(self, rng: np.random.Generator | None) -> None:
        self._clients = [self.patterns[k % len(self.patterns)] for k in range(self.num_clients)]

    def online(self, client: int, t: float) -> bool:
        """Whether ``client`` is online at ``t``."""
        return self._clients[client].online_until(t) is not None

    def filter(self, idle: list[int], now: float) -> list[int]:
        return [c for c in idle if self._clients[c].online_until(now) is not None]

    def next_change(self, now: float) -> float | None:
        return min((p.next_online(now) for p in {id(p): p for p in self._clients}.values()), default=None)

    def dropout_time(self, job: Job) -> float | None:
        until = self._clients[job.client_id].online_until(job.dispatch_time)
        if until is None:
            return job.dispatch_time
        return until if until < job.arrival_time else None

    def _args(self) -> dict[str, Any]:
        return {"file": self.file, "entries": len(self.patterns)}
