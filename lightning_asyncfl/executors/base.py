"""Executor: runs the loop's client jobs and hands back their results."""

from __future__ import annotations

import abc
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor

from lightning_asyncfl.client import ClientTrainer
from lightning_asyncfl.errors import require
from lightning_asyncfl.state import Job, JobResult, ModelState

log = logging.getLogger(__name__)

#: what ``num_threads`` accepts, in words
NUM_THREADS_ALLOWED = "auto (the cores available), null (torch's default) or an integer >= 1"

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


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def resolve_num_threads(num_threads: Any) -> int | None:
    """``num_threads`` with ``auto`` made the available cores (:func:`available_cores`).

    Raises:
        InvalidValue: neither auto, null nor an integer >= 1.
    """
    if num_threads == "auto":
        return available_cores()
    require(num_threads is None or (isinstance(num_threads, int) and not isinstance(num_threads, bool) and num_threads >= 1), "num_threads", num_threads, NUM_THREADS_ALLOWED)
    return num_threads


def resolve_config_threads(cfg: Any, saved: Mapping[str, Any] | None = None) -> Any:
    """``cfg`` with ``executor.num_threads: auto`` replaced by a number, so that the run's config
    (and its checkpoints) record what the jobs ran with: a resumed run's own number (``saved``,
    the checkpoint's config), else the cores available here. Anything else is left as it is."""
    from omegaconf import open_dict

    node = cfg.get("executor")
    if node is None or node.get("num_threads") != "auto":
        return cfg
    before = (saved or {}).get("executor") or {}
    value = before.get("num_threads") if isinstance(before.get("num_threads"), int) else available_cores()
    with open_dict(cfg):
        cfg.executor.num_threads = value
    log.info("executor.num_threads=auto: %d intra-op threads per job (%s); give executor.num_threads=%d to rerun it elsewhere",
             value, "the resumed run's" if before.get("num_threads") == value and saved else "the cores available", value)
    return cfg
