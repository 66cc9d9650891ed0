"""ParallelExecutor: the machinery that threads, processes and Ray share.

Each worker (a trainer in a thread, a spawned process, a Ray actor) is served by one
proxy thread in the loop's process. A proxy takes the pending job the loop will need
first (lowest virtual arrival time, then job id), runs it on its worker and stores the
outcome; the loop's :meth:`result` waits for the job it needs. Jobs therefore train
speculatively in parallel while the loop still handles arrivals in virtual-time order,
and a job's bytes depend only on its inputs (base weights, seed, client state), never on
which worker ran it.

The global weights a job starts from are prepared once per version (:meth:`_share`:
nothing for threads, a CPU shared-memory copy for processes, one ``ray.put`` for Ray) and
freed when the last job that needs them has finished.
"""

from __future__ import annotations

import abc
import heapq
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_asyncfl.errors import checking, require
from lightning_asyncfl.executors.base import NUM_THREADS_ALLOWED, Executor, JobFailed, TrainerFactory, WorkerLost, resolve_num_threads
from lightning_asyncfl.snapshots import Snapshots
from lightning_asyncfl.state import Job, JobResult, ModelState

log = logging.getLogger(__name__)


def resolve_devices(devices: Any) -> list[str] | None:
    """``executor.devices`` as a list of device names: null stays None, ``auto`` is every
    visible CUDA device (None without one), a list is taken as given."""
    if devices is None:
        return None
    if devices == "auto":
        count = torch.cuda.device_count()
        return [f"cuda:{i}" for i in range(count)] or None
    return [str(d) for d in devices]


def check_devices(devices: Any) -> None:
    """Raise :class:`InvalidValue` unless ``devices`` is null, ``auto`` or a non-empty list of device names."""
    if devices is None or devices == "auto":
        return
    ok = isinstance(devices, (list, tuple)) and len(devices) > 0
    if ok:
        try:
            parsed = [torch.device(str(d)) for d in devices]
            ok = all(d.type in ("cpu", "cuda", "mps") for d in parsed)
        except (RuntimeError, ValueError):
            ok = False
    require(ok, "devices", devices, "null, auto, or a non-empty list of devices such as [cuda:0, cuda:1]")


class ParallelExecutor(Executor):
    """N workers fed, earliest-needed job first, by one proxy thread each.

    Args:
        workers: number of workers (jobs trained at once).
        num_threads: PyTorch intra-op threads per job (part of the result on the CPU);
            ``auto`` (the default): the cores available to this process, in every worker
            (the same bytes as the sequential executor's default; for speed on the CPU give
            cores // workers); null leaves torch's default.
        devices: devices the workers train on, round-robin (``[cuda:0, cuda:1]``); ``auto``
            for every visible GPU; null for the client accelerator's default device.

    Subclasses write :meth:`_open` (make worker ``i``) and :meth:`_execute` (run a job on
    it), and may write :meth:`_share`, :meth:`_reopen` and :meth:`_close`.
    """

    def __init__(self, *, workers: int = 2, num_threads: int | str | None = "auto", devices: Any = None) -> None:
        with checking() as check:
            check(isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1, "workers", workers, "an integer >= 1")
            check(num_threads in (None, "auto") or (isinstance(num_threads, int) and not isinstance(num_threads, bool) and num_threads >= 1), "num_threads", num_threads, NUM_THREADS_ALLOWED)
            check_devices(devices)
        self.workers, self.num_threads, self.devices = workers, resolve_num_threads(num_threads), devices
        self._cond = threading.Condition()
        self._queue: list[tuple[float, int]] = []  # (arrival time, job id) of jobs not yet started
        self._jobs: dict[int, tuple[Job, Mapping[str, Tensor] | None]] = {}  # submitted, not yet taken or cancelled
        self._results: dict[int, JobResult | Exception] = {}
        self._snapshots: Snapshots[int, Any] = Snapshots()  # version -> shared payload, held by the jobs that need it
        self._holds: dict[int, int] = {}  # job id -> version whose payload it holds
        self._threads: list[threading.Thread] = []
        self._handles: list[Any] = []
        self._stopping = False
        self.lost_workers = 0

    # -- what a subclass writes ----------------------------------------------------
    @abc.abstractmethod
    def _open(self, index: int, device: str | None, make_trainer: TrainerFactory) -> Any:
        """Create worker ``index`` (on ``device``) and return its handle."""

    def _ready(self, handles: list[Any]) -> None:
        """Wait until every opened worker can take jobs (raise if one cannot)."""

    @abc.abstractmethod
    def _execute(self, index: int, handle: Any, job: Job, payload: Any, client_state: Mapping[str, Tensor] | None) -> JobResult:
        """Train ``job`` on the worker; raise :class:`WorkerLost` if the worker died."""

    def _share(self, base: ModelState) -> Any:
        """What workers receive for a global version (called once per version)."""
        return base

    def _reopen(self, index: int, handle: Any) -> Any:
        """A working handle after worker ``index`` was lost (default: the same one)."""
        return handle

    def _close(self, handles: list[Any]) -> None:
        """Stop every worker."""

    # -- Executor ------------------------------------------------------------------
    def start(self, make_trainer: TrainerFactory) -> None:
        self._stopping = False
        devices = resolve_devices(self.devices)
        placement = [devices[i % len(devices)] if devices else None for i in range(self.workers)]
        self._handles = []
        try:
            for i, device in enumerate(placement):
                self._handles.append(self._open(i, device, make_trainer))
            self._ready(self._handles)
        except BaseException:
            self._close(self._handles)
            self._handles = []
            raise
        log.info("%r started: %d worker(s) on %s", self, self.workers, ", ".join(d or "the default device" for d in placement))
        self._threads = [threading.Thread(target=self._serve, args=(i,), name=f"asyncfl-proxy-{i}", daemon=True) for i in range(self.workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Job, base: ModelState, client_state: Mapping[str, Tensor] | None = None) -> None:
        with self._cond:
            self._snapshots.hold(job.base_version, lambda: self._share(base))
            self._holds[job.job_id] = job.base_version
            self._jobs[job.job_id] = (job, client_state)
            heapq.heappush(self._queue, (job.arrival_time, job.job_id))
            self._cond.notify()

    def result(self, job: Job) -> JobResult:
        with self._cond:
            while job.job_id not in self._results:
                if job.job_id not in self._jobs:
                    raise KeyError(f"job {job.job_id} was not submitted or was cancelled")
                if self._stopping or not any(t.is_alive() for t in self._threads):
                    raise RuntimeError(f"{type(self).__name__} is not running (no worker left to train job {job.job_id})")
                self._cond.wait(timeout=1.0)
            outcome = self._results.pop(job.job_id)
            del self._jobs[job.job_id]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def wait(self, jobs: Sequence[Job], timeout: float | None = None) -> list[Job]:
        with self._cond:
            self._cond.wait_for(lambda: any(j.job_id in self._results for j in jobs) or self._stopping, timeout=timeout)
            return [j for j in jobs if j.job_id in self._results]

    def cancel(self, job: Job) -> None:
        with self._cond:
            self._jobs.pop(job.job_id, None)  # still queued: skipped when taken
            self._results.pop(job.job_id, None)
            self._drop_hold(job.job_id)

    def shutdown(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._close(self._handles)
        for thread in self._threads:
            thread.join(timeout=10)
        self._close(self._handles)  # any worker a proxy restarted while we were stopping
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning("proxy threads still running after shutdown: %s", ", ".join(alive))
        with self._cond:
            self._threads, self._handles = [], []
            self._queue.clear()
            self._jobs.clear()
            self._results.clear()
            self._snapshots.clear()
            self._holds.clear()

    # -- the proxy threads ---------------------------------------------------------
    def _drop_hold(self, job_id: int) -> None:
        version = self._holds.pop(job_id, None)
        if version is None:
            return
        self._snapshots.release(version)

    def _take(self) -> tuple[Job, Any, Mapping[str, Tensor] | None] | None:
        """The next job to run (the one needed first), or None when shutting down."""
        with self._cond:
            while True:
                if self._stopping:
                    return None
                while self._queue:
                    _, job_id = heapq.heappop(self._queue)
                    if job_id in self._jobs:  # not cancelled
                        job, client_state = self._jobs[job_id]
                        return job, self._snapshots[job.base_version], client_state
                self._cond.wait()

    def _serve(self, index: int) -> None:
        handle = self._handles[index]
        while True:
            taken = self._take()
            if taken is None:
                return
            job, payload, client_state = taken
            lost = False
            try:
                outcome: JobResult | Exception = self._execute(index, handle, job, payload, client_state)
            except WorkerLost as error:
                outcome, lost = error, True
            except Exception as error:  # the job's own failure: handed to the loop
                outcome = error
            del payload
            with self._cond:
                if job.job_id in self._jobs:
                    self._results[job.job_id] = outcome
                self._drop_hold(job.job_id)
                self._cond.notify_all()
                if self._stopping:
                    return
            if lost:
                self.lost_workers += 1
                log.warning("worker %d lost while training job %d (client %d): %s; starting a new one", index, job.job_id, job.client_id, outcome)
                try:
                    handle = self._handles[index] = self._reopen(index, handle)
                except Exception as error:  # cannot replace it: this proxy stops taking jobs
                    log.error("worker %d could not be restarted: %s", index, error)
                    return

    def __repr__(self) -> str:
        return f"{type(self).__name__}(workers={self.workers}, num_threads={self.num_threads}, devices={self.devices})"


def remote_error(where: str, job: Job, text: str) -> JobFailed:
    """The error of a job whose training raised in ``where`` (a process or an actor)."""
    return JobFailed(f"{text} (job {job.job_id}, client {job.client_id}, in {where})")
