"""Injected client faults, to test that a run survives them (config group ``faults``).

A real federation has clients whose training crashes and clients that send garbage.
:class:`Faults` makes a chosen share of jobs do either, inside the client's own training
(in whichever worker runs it), so the loop's real failure and validation paths handle
them:

- ``error_rate``: the job raises :class:`InjectedFault` (the loop logs and counts it as
  ``failed``, retries it or stops, per ``server.on_client_error``);
- ``nan_rate``: the job trains, then sends weights full of NaN (the loop rejects the
  update as ``non_finite``).

Which jobs is drawn from each job's own seed and attempt, so a run stays deterministic
and a retried job gets a fresh draw.
"""

from __future__ import annotations

import numpy as np
import torch

from lightning_asyncfl import seeding
from lightning_asyncfl.errors import checking
from lightning_asyncfl.state import Job, JobResult


class InjectedFault(RuntimeError):
    """The failure :class:`Faults` injects into a client's training."""


class Faults:
    """No faults with the defaults (``faults=none``).

    Args:
        error_rate: share of jobs whose training raises, in [0, 1].
        nan_rate: share of jobs that send NaN weights, in [0, 1]; ``error_rate + nan_rate <= 1``.
    """

    def __init__(self, *, error_rate: float = 0.0, nan_rate: float = 0.0) -> None:
        with checking() as check:
            check(0 <= error_rate <= 1, "error_rate", error_rate, "in [0, 1]")
            check(0 <= nan_rate <= 1 and error_rate + nan_rate <= 1, "nan_rate", nan_rate, f"in [0, 1 - error_rate={1 - error_rate}]")
        self.error_rate, self.nan_rate = float(error_rate), float(nan_rate)

    @property
    def active(self) -> bool:
        """Whether any job may be faulty."""
        return self.error_rate > 0 or self.nan_rate > 0

    def draw(self, job: Job) -> str | None:
        """``"error"``, ``"nan"`` or None for ``job`` (from its seed and attempt)."""
        if not self.active:
            return None
        u = float(np.random.default_rng(np.random.SeedSequence([job.seed, seeding.FAULTS, job.attempt])).random())
        if u < self.error_rate:
            return "error"
        return "nan" if u < self.error_rate + self.nan_rate else None

    def before_training(self, job: Job) -> None:
        """Raise :class:`InjectedFault` if ``job`` is drawn to fail."""
        if self.draw(job) == "error":
            raise InjectedFault(f"injected fault: job {job.job_id} (client {job.client_id}, attempt {job.attempt}) fails")

    def after_training(self, job: Job, result: JobResult) -> JobResult:
        """``result`` with NaN weights if ``job`` is drawn to send garbage."""
        if self.draw(job) != "nan":
            return result
        garbage = torch.full_like(result.state.flat, float("nan"))
        return JobResult(result.state.with_flat(garbage), result.metrics, result.client_state)

    def __repr__(self) -> str:
        return f"Faults(error_rate={self.error_rate}, nan_rate={self.nan_rate})"
