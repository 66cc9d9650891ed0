"""Executor: runs the loop's client jobs and hands back their results."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence

from torch import Tensor

from lightning_asyncfl.client import ClientTrainer
from lightning_asyncfl.state import Job, JobResult, ModelState

#: builds one ClientTrainer per worker; called with ``device="cuda:1"`` when the executor
#: places workers on devices (a :class:`~lightning_asyncfl.client.TrainerSpec` is picklable,
#: as the processes executor needs)
TrainerFactory = Callable[..., ClientTrainer]


class JobFailed(RuntimeError):
    """A job's training raised inside a worker; the message holds the original error."""


class WorkerLost(RuntimeError):
    """The worker training a job died (killed, out of memory, ...) before it finished."""


class Executor(abc.ABC):
    """Where client jobs run. All executors take the same jobs and must give the same bytes.

    Every input of a job is fixed at dispatch, so an executor may start training as soon
    as :meth:`submit` is called; the loop asks for results in virtual-arrival order.
    A job's error (its training raised, its worker died) is raised by :meth:`result`,
    and the loop counts and logs it as a failed job.
    """

    @abc.abstractmethod
    def start(self, make_trainer: TrainerFactory) -> None:
        """Create the workers; ``make_trainer`` builds one :class:`ClientTrainer` per worker."""

    @abc.abstractmethod
    def submit(self, job: Job, base: ModelState, client_state: Mapping[str, Tensor] | None = None) -> None:
        """Hand over ``job``, which trains from the global model ``base`` with the client's own state."""

    @abc.abstractmethod
    def result(self, job: Job) -> JobResult:
        """Block until ``job`` is trained; return its result, or raise its error."""

    @abc.abstractmethod
    def cancel(self, job: Job) -> None:
        """Forget ``job`` (the run ends with it still in flight)."""

    def wait(self, jobs: Sequence[Job], timeout: float | None = None) -> list[Job]:
        """The jobs among ``jobs`` whose result is ready, waiting up to ``timeout`` seconds
        for at least one (``clock=wall``). A sequential executor trains one now."""
        return []

    def shutdown(self) -> None:
        """Stop every worker; safe to call twice."""
