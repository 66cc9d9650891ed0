"""The loop's settings (stop rules and how it treats bad jobs), defined once.

:data:`SERVER_KEYS` are the ``server.*`` config keys the loop takes; ``build.build`` reads
exactly these from the config, :class:`~lightning_asyncfl.loop.AsyncFLLoop` takes them as
keyword arguments, and :func:`check_loop_settings` checks them, all from
:class:`LoopSettings`' fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lightning_asyncfl.errors import checking

CLOCKS = ["virtual", "wall"]
ON_CLIENT_ERROR = ["skip", "retry", "raise"]
TARGET_METRICS = ["val_accuracy", "test_accuracy"]  # what target_accuracy watches


def _count(value: Any) -> bool:
    """Whether ``value`` is an integer (a bool is not one here: ``max_steps=true`` is a mistake)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    """When the run stops and what it does with bad jobs (see :class:`~lightning_asyncfl.loop.AsyncFLLoop`)."""

    max_steps: int = 100
    max_staleness: int | None = None
    eval_every: int = 1
    max_updates: int | None = None
    max_time: float | None = None
    target_accuracy: float | None = None
    target_metric: str = "test_accuracy"
    on_client_error: str = "skip"
    max_retries: int = 2
    max_arrivals_without_progress: int | None = 1000
    max_time_without_progress: float | None = None
    clock: str = "virtual"  # a top-level key (``clock``), not under ``server``

    def check(self) -> LoopSettings:
        """Raise :class:`~lightning_asyncfl.errors.InvalidValue` (or several at once) for every value outside what is allowed."""
        s = self
        with checking() as check:
            check(s.target_metric in TARGET_METRICS, "target_metric", s.target_metric, "one of: " + ", ".join(TARGET_METRICS))
            check(_count(s.max_steps) and s.max_steps >= 1, "max_steps", s.max_steps, "an integer >= 1")
            check(s.max_staleness is None or (_count(s.max_staleness) and s.max_staleness >= 0), "max_staleness", s.max_staleness, "null or an integer >= 0")
            check(_count(s.eval_every) and s.eval_every >= 1, "eval_every", s.eval_every, "an integer >= 1")
            check(s.max_updates is None or (_count(s.max_updates) and s.max_updates >= 1), "max_updates", s.max_updates, "null or an integer >= 1")
            check(s.max_time is None or (_number(s.max_time) and s.max_time > 0), "max_time", s.max_time, "null or > 0")
            check(s.target_accuracy is None or (_number(s.target_accuracy) and 0 < s.target_accuracy <= 1), "target_accuracy", s.target_accuracy, "null or in (0, 1]")
            check(s.max_arrivals_without_progress is None or (_count(s.max_arrivals_without_progress) and s.max_arrivals_without_progress >= 1),
                  "max_arrivals_without_progress", s.max_arrivals_without_progress, "null or an integer >= 1")  # fmt: skip
            check(s.max_time_without_progress is None or (_number(s.max_time_without_progress) and s.max_time_without_progress > 0),
                  "max_time_without_progress", s.max_time_without_progress, "null or > 0")  # fmt: skip
            check(_count(s.max_retries) and s.max_retries >= 0, "max_retries", s.max_retries, "an integer >= 0")
            check(s.on_client_error in ON_CLIENT_ERROR, "on_client_error", s.on_client_error, "one of: " + ", ".join(ON_CLIENT_ERROR))
            check(s.clock in CLOCKS, "clock", s.clock, "one of: " + ", ".join(CLOCKS))
        return self


#: the stop rules: when a run ends (a resumed run may change them)
STOP_RULES: tuple[str, ...] = ("max_steps", "max_updates", "max_time", "target_accuracy", "target_metric")
#: the ``server.*`` keys of the loop's settings: every field but ``clock``
SERVER_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(LoopSettings) if f.name != "clock")


def check_loop_settings(*, max_steps: int, **settings: Any) -> None:
    """Raise :class:`InvalidValue` for every stop rule or loop setting outside what is allowed
    (the keyword arguments are :class:`LoopSettings`' fields)."""
    LoopSettings(max_steps=max_steps, **settings).check()


def reached(settings: LoopSettings, state: Any) -> str | None:
    """The stop rule a run at ``state`` (a :class:`~lightning_asyncfl.runstate.RunState`) has
    reached, from the stop rules alone (a resumed run may have new ones), or None."""
    evaluated = state.history and state.last_eval == state.version
    accuracy = state.history[-1].get(settings.target_metric) if evaluated else None
    if state.version >= settings.max_steps:
        return "max_steps"
    if settings.max_updates is not None and state.counts["arrived"] >= settings.max_updates:
        return "max_updates"
    if settings.max_time is not None and state.now >= settings.max_time:
        return "max_time"
    if settings.target_accuracy is not None and accuracy is not None and accuracy >= settings.target_accuracy:
        return "target_accuracy"
    return None


def no_progress(settings: LoopSettings, state: Any, arrivals: int, what: str) -> str | None:
    """Count ``arrivals`` that brought no new global version (``what``: the last of them);
    returns why the run must stop as failed when the no-progress guard says so, else None."""
    state.futile += arrivals
    state.last_problem = what
    limit, patience = settings.max_arrivals_without_progress, settings.max_time_without_progress
    if limit is not None and state.futile >= limit and not len(state.buffer):  # accepted updates still buffered may yet make a version
        return (f"no progress: {state.futile} arrivals in a row brought no new global version "
                f"(server.max_arrivals_without_progress={limit}); the last: {what}")  # fmt: skip
    if patience is not None and state.now - state.progress_time >= patience:
        return (f"no progress: no new global version for {patience:g} virtual seconds, since {state.progress_time:.3f} "
                f"(server.max_time_without_progress); the last: {what}")  # fmt: skip
    return None
