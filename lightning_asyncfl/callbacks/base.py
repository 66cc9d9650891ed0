"""Callback: typed no-op hooks the loop calls, in the spirit of Lightning's callbacks.

Every hook receives a read-only :class:`~lightning_asyncfl.view.LoopView` of the run
first (``loop.version``, ``loop.now``, ``loop.counts``, ``loop.global_state``,
``loop.last_metrics``, ``loop.aggregator``, ...), not the loop itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lightning_asyncfl.state import ClientUpdate, Job

if TYPE_CHECKING:
    from lightning_asyncfl.view import LoopView


class Callback:
    """Subclass and override the hooks you need; every hook is a no-op here."""

    def on_run_start(self, loop: LoopView) -> None:
        """Called once before the first dispatch."""

    def on_dispatch(self, loop: LoopView, job: Job) -> None:
        """Called when a job is dispatched to a client."""

    def on_update_received(self, loop: LoopView, update: ClientUpdate) -> None:
        """Called when an arrived update passed the checks and entered the buffer."""

    def on_update_rejected(self, loop: LoopView, job: Job, reason: str, detail: str, update: ClientUpdate | None) -> None:
        """Called when an arrived job is not applied: ``reason`` is stale, non_finite, shape, dtype or failed."""

    def on_retry(self, loop: LoopView, job: Job, detail: str) -> None:
        """Called when ``job``'s training failed and it is run again (``server.on_client_error=retry``)."""

    def on_dropout(self, loop: LoopView, job: Job) -> None:
        """Called when ``job``'s client vanished before its update arrived (``availability``)."""

    def on_aggregate(self, loop: LoopView, updates: Sequence[ClientUpdate], version: int) -> None:
        """Called after the aggregator made global ``version`` from ``updates``."""

    def on_evaluate(self, loop: LoopView, version: int, metrics: dict[str, float]) -> None:
        """Called after the global model of ``version`` was evaluated."""

    def on_run_end(self, loop: LoopView, summary: dict[str, Any]) -> None:
        """Called once at the end with the run's summary, also when it is interrupted or fails (``summary["status"]``)."""

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint (plain values)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
