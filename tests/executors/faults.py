"""Client algorithms that fail chosen jobs, importable by worker processes and Ray actors."""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence

from lightning_asyncfl.client_algorithms import ClientAlgorithm, LocalTraining


class FailJobs(ClientAlgorithm):
    """Jobs in ``jobs`` raise after their first optimizer step; with ``kill`` the worker
    process kills itself with SIGKILL there instead (mid-job)."""

    def __init__(self, *, jobs: Sequence[int] = (), kill: bool = False) -> None:
        self.jobs = frozenset(int(j) for j in jobs)
        self.kill = kill

    def after_optimizer_step(self, ctx: LocalTraining) -> None:
        if ctx.steps == 1 and ctx.job.job_id in self.jobs:
            if self.kill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"injected failure in job {ctx.job.job_id}")
