"""Callback: typed no-op hooks the loop calls, in the spirit of Lightning's callbacks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lightning_asyncfl.state import ClientUpdate, Job

if TYPE_CHECKING:
    from lightning_asyncfl.loop import AsyncFLLoop


class Callback:
    """Subclass and override the hooks you need; every hook is a no-op here."""

    def on_run_start(self, loop: AsyncFLLoop) -> None:
        """Called once before the first dispatch."""

    def on_dispatch(self, loop: AsyncFLLoop, job: Job) -> None:
        """Called when a job is dispatched to a client."""

    def on_update_received(self, loop: AsyncFLLoop, update: ClientUpdate) -> None:
        """Called when an arrived update passed the checks and entered the buffer."""

    def on_update_rejected(self, loop: AsyncFLLoop, job: Job, reason: str, detail: str, update: ClientUpdate | None) -> None:
        """Called when an arrived job is not applied: ``reason`` is stale, non_finite, shape, dtype or failed."""

    def on_retry(self, loop: AsyncFLLoop, job: Job, detail: str) -> None:
        """Called when ``job``'s training failed and it is run again (``server.on_client_error=retry``)."""

    def on_dropout(self, loop: AsyncFLLoop, job: Job) -> None:
        """Called when ``job``'s client vanished before its update arrived (``availability``)."""

    def on_aggregate(self, loop: AsyncFLLoop, updates: Sequence[ClientUpdate], version: int) -> None:
        """Called after the aggregator made global ``version`` from ``updates``."""

    def on_evaluate(self, loop: AsyncFLLoop, version: int, metrics: dict[str, float]) -> None:
        """Called after the global model of ``version`` was evaluated."""

    def on_run_end(self, loop: AsyncFLLoop, summary: dict[str, Any]) -> None:
        """Called once at the end with the run's summary, also when it is interrupted or fails (``summary["status"]``)."""

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint (plain values)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
