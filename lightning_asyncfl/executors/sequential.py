"""SequentialExecutor: trains each job in the loop's thread when its arrival is handled."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from lightning_asyncfl.client import ClientTrainer, intra_op_threads
from lightning_asyncfl.executors.base import Executor, TrainerFactory, resolve_num_threads
from lightning_asyncfl.state import Job, JobResult, ModelState


class SequentialExecutor(Executor):
    """One trainer in the loop's own thread; the default and the reference for every other.

    Args:
        num_threads: PyTorch intra-op threads while a job trains (part of the result on
            the CPU: summation order in the kernels depends on it); ``auto`` (the default):
            the cores available to this process; null leaves torch's default.
    """

    def __init__(self, *, num_threads: int | str | None = "auto") -> None:
        self.num_threads = resolve_num_threads(num_threads)
        self._trainer: ClientTrainer | None = None
        self._pending: dict[int, tuple[ModelState, Mapping[str, Tensor] | None]] = {}
        self._done: dict[int, JobResult | Exception] = {}

    def start(self, make_trainer: TrainerFactory) -> None:
        with intra_op_threads(self.num_threads):
            self._trainer = make_trainer()

    def submit(self, job: Job, base: ModelState, client_state: Mapping[str, Tensor] | None = None) -> None:
        self._pending[job.job_id] = (base, client_state)

    def result(self, job: Job) -> JobResult:
        if job.job_id in self._done:  # trained early by wait()
            outcome = self._done.pop(job.job_id)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        return self._train(job)

    def _train(self, job: Job) -> JobResult:
        if self._trainer is None:
            raise RuntimeError("SequentialExecutor.start() was not called")
        base, client_state = self._pending.pop(job.job_id)
        with intra_op_threads(self.num_threads):
            return self._trainer.train(job, base, client_state)

    def wait(self, jobs: Sequence[Job], timeout: float | None = None) -> list[Job]:
        ready = [job for job in jobs if job.job_id in self._done]
        if ready or not jobs:
            return ready
        job = min(jobs, key=lambda j: (j.arrival_time, j.job_id))  # train the one planned first
        try:
            self._done[job.job_id] = self._train(job)
        except Exception as error:  # handed to the loop by result()
            self._done[job.job_id] = error
        return [job]

    def cancel(self, job: Job) -> None:
        self._pending.pop(job.job_id, None)
        self._done.pop(job.job_id, None)

    def shutdown(self) -> None:
        self._pending.clear()
        self._done.clear()
        self._trainer = None

    def __repr__(self) -> str:
        return f"SequentialExecutor(num_threads={self.num_threads})"
