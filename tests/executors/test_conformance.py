"""The executor conformance test: what every executor, a user's included, must do.

1. Same bytes as the sequential executor: the same jobs give the same global model.
2. Failure isolation: a job whose training raises is counted as failed; the run goes on.
3. Clean shutdown: after the run no thread, process or Ray session it started is left.

Each executor runs one tiny experiment (4 clients, an MLP on 48 samples, 6 versions) in
which job 2 raises. To check your own executor, add it to ``EXECUTORS``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping, Sequence

import pytest
import torch
from torch import Tensor

from lightning_asyncfl.aggregators import FedAsync
from lightning_asyncfl.client import Evaluator, TrainerSpec, intra_op_threads
from lightning_asyncfl.delays import ConstantDelay
from lightning_asyncfl.executors import ProcessExecutor, SequentialExecutor, ThreadExecutor
from lightning_asyncfl.executors.base import Executor, TrainerFactory
from lightning_asyncfl.loop import AsyncFLLoop
from lightning_asyncfl.schedulers import ConcurrencyScheduler
from lightning_asyncfl.state import Job, JobResult, ModelState
from tests.executors.faults import FailJobs
from tests.helpers import children_left, toy_data, toy_model

FAILING_JOB = 2


class QueueExecutor(Executor):
    """A user's executor, written against the documented interface only: one worker thread
    with its own trainer takes jobs from a queue in submission order."""

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._results: dict[int, JobResult | Exception] = {}
        self._done = threading.Condition()
        self._thread: threading.Thread | None = None

    def start(self, make_trainer: TrainerFactory) -> None:
        with intra_op_threads(1):
            trainer = make_trainer()
        self._thread = threading.Thread(target=self._serve, args=(trainer,), name="user-executor", daemon=True)
        self._thread.start()

    def _serve(self, trainer) -> None:
        while (item := self._queue.get()) is not None:
            job, base, client_state = item
            try:
                with intra_op_threads(1):
                    outcome: JobResult | Exception = trainer.train(job, base, client_state)
            except Exception as error:  # the job's own failure: raised by result()
                outcome = error
            with self._done:
                self._results[job.job_id] = outcome
                self._done.notify_all()

    def submit(self, job: Job, base: ModelState, client_state: Mapping[str, Tensor] | None = None) -> None:
        self._queue.put((job, base, client_state))

    def result(self, job: Job) -> JobResult:
        with self._done:
            self._done.wait_for(lambda: job.job_id in self._results)
            outcome = self._results.pop(job.job_id)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def wait(self, jobs: Sequence[Job], timeout: float | None = None) -> list[Job]:
        with self._done:
            self._done.wait_for(lambda: any(j.job_id in self._results for j in jobs), timeout=timeout)
            return [j for j in jobs if j.job_id in self._results]

    def cancel(self, job: Job) -> None:
        with self._done:
            self._results.pop(job.job_id, None)

    def shutdown(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None


def _ray() -> Executor:
    pytest.importorskip("ray", reason="Ray is the optional extra lightning-asyncfl[ray]")
    from lightning_asyncfl.executors import RayExecutor

    return RayExecutor(workers=2, num_threads=1, init_num_cpus=2)


EXECUTORS: dict[str, Callable[[], Executor]] = {
    "sequential": lambda: SequentialExecutor(num_threads=1),
    "threads": lambda: ThreadExecutor(workers=2, num_threads=1),
    "processes": lambda: ProcessExecutor(workers=2, num_threads=1),  # forked by the zygote (conftest starts it)
    "processes_forkserver": lambda: ProcessExecutor(workers=2, num_threads=1, start_method="forkserver"),
    "ray": _ray,
    "user": QueueExecutor,
}
SLOW = {"ray"}  # over ~10 s here: starting a local Ray


def tiny_run(executor: Executor) -> tuple[AsyncFLLoop, dict]:
    """FedAsync over 4 toy clients, 3 in flight, job 2 raising; returns the loop and its summary."""
    train, test, indices = toy_data(num_clients=4, per_client=12)
    template = toy_model()
    loop = AsyncFLLoop(
        initial_state=ModelState.from_module(template),
        aggregator=FedAsync(alpha=0.5),
        scheduler=ConcurrencyScheduler(concurrency=3),
        delay=ConstantDelay(value=1.0),
        executor=executor,
        make_trainer=TrainerSpec(module=template, train_dataset=train, client_indices=indices,
                                 settings={"epochs": 1, "batch_size": 4}, algorithm=FailJobs(jobs=[FAILING_JOB])),  # fmt: skip
        num_samples=[len(i) for i in indices],
        evaluate=Evaluator(toy_model(), test).evaluate,
        seed=3,
        max_steps=6,
        eval_every=6,
    )
    return loop, loop.run()


@pytest.fixture(scope="module")
def reference() -> tuple[AsyncFLLoop, dict]:
    return tiny_run(SequentialExecutor(num_threads=1))


def _threads() -> set[str]:
    """Live threads, but the standard library's resource sharer (it passes file descriptors
    to worker processes and lives as long as this process, once started)."""
    return {t.name for t in threading.enumerate()
            if t.is_alive() and getattr(getattr(t, "_target", None), "__module__", "") != "multiprocessing.resource_sharer"}  # fmt: skip


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in EXECUTORS])
def test_executor_conforms(name, reference):
    # Prepare
    threads_before = _threads()
    executor = EXECUTORS[name]()

    # Execute
    loop, summary = tiny_run(executor)

    # Assert: the same bytes as the sequential executor
    ref_loop, ref_summary = reference
    assert torch.equal(loop.global_state.flat, ref_loop.global_state.flat)
    assert summary["client_updates"] == ref_summary["client_updates"]
    # failure isolation: the raising job is counted, the run goes on to its stop rule
    assert summary["status"] == "completed" and summary["stop_reason"] == "max_steps" and summary["steps"] == 6
    assert summary["failed"] == 1
    assert summary["accounting"]["balanced"]
    # clean shutdown: nothing the executor started is left running
    assert _threads() - threads_before == set()
    assert children_left() == []
    if name == "ray":
        import ray

        assert not ray.is_initialized()
