"""LoopView: what a callback sees of the run, read-only.

Every callback hook receives a :class:`LoopView` as its first argument instead of the
loop itself: the version, the time, the counters, the global model, the evaluation rows,
the aggregator and the clients' sample counts. Nothing on it can be assigned, and the
counters and rows it returns are copies or read-only proxies, so a callback cannot change
the run by accident (a checkpointed run resumes to the same bytes whatever the callbacks
did). A callback that keeps state writes its own ``state_dict``.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lightning_asyncfl.state import ModelState

if TYPE_CHECKING:
    from lightning_asyncfl.aggregators.base import AsyncAggregator
    from lightning_asyncfl.loop import AsyncFLLoop


class LoopView:
    """A read-only view of a running :class:`~lightning_asyncfl.loop.AsyncFLLoop`."""

    __slots__ = ("_loop",)

    def __init__(self, loop: AsyncFLLoop) -> None:
        object.__setattr__(self, "_loop", loop)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"the loop's view is read-only: cannot set {name!r}")

    @property
    def version(self) -> int:
        """The current global version."""
        return self._loop.version

    @property
    def now(self) -> float:
        """The current virtual time (wall seconds with ``clock=wall``)."""
        return self._loop.now

    @property
    def wall_time(self) -> float:
        """Wall-clock seconds since the run started."""
        return self._loop.wall_time

    @property
    def counts(self) -> Mapping[str, int]:
        """Counters, read-only: dispatched, arrived, accepted, applied, failed, dropped, retries, attacked."""
        return types.MappingProxyType(self._loop.counts)

    @property
    def rejected(self) -> Mapping[str, int]:
        """Rejected updates by reason, read-only."""
        return types.MappingProxyType(self._loop.rejected)

    @property
    def in_flight(self) -> int:
        """Jobs dispatched and not yet arrived."""
        return self._loop.in_flight

    @property
    def buffered(self) -> int:
        """Accepted updates waiting for the aggregator."""
        return len(self._loop.buffer)

    @property
    def global_state(self) -> ModelState:
        """The current global model (immutable by convention: never change it in place)."""
        return self._loop.global_state

    @property
    def history(self) -> Sequence[Mapping[str, float]]:
        """The evaluation rows so far (version, client_updates, virtual_time, wall_time, metrics), read-only."""
        return tuple(types.MappingProxyType(row) for row in self._loop.history)

    @property
    def last_metrics(self) -> Mapping[str, float]:
        """The last evaluation row (empty before the first), read-only."""
        history = self._loop.history
        return types.MappingProxyType(history[-1] if history else {})

    @property
    def aggregator(self) -> AsyncAggregator:
        """The aggregator (read its settings; changing it changes the run)."""
        return self._loop.aggregator

    @property
    def num_clients(self) -> int:
        """Number of clients."""
        return self._loop.num_clients

    @property
    def num_samples(self) -> Sequence[int]:
        """Training samples of each client, by client id."""
        return tuple(self._loop.num_samples)

    @property
    def client_states(self) -> Mapping[int, Mapping[str, Any]]:
        """Each client's own tensors by client id (SCAFFOLD's c_i, DP-SGD's step count), read-only."""
        return types.MappingProxyType({c: types.MappingProxyType(st) for c, st in self._loop.client_states.items()})

    @property
    def max_steps(self) -> int:
        """The run's ``max_steps`` stop rule."""
        return self._loop.max_steps

    @property
    def status(self) -> str:
        """``created``, ``running``, ``completed``, ``interrupted`` or ``failed``."""
        return self._loop.status

    @property
    def stop_reason(self) -> str | None:
        """Why the run stops (a stop rule or a failure), or None while it goes on."""
        return self._loop.stop_reason

    def __repr__(self) -> str:
        return f"LoopView(version={self.version}, now={self.now:.3f}, in_flight={self.in_flight})"
