"""ProcessExecutor: N worker processes (forked by the zygote or a fork server, or spawned), weights in CPU shared memory.

Each worker process receives the trainer spec (model template, dataset, client index
lists) once at start; its tensors travel as shared memory, so the dataset is held once
on the machine, not once per worker. For every global version the weights are copied
once into a CPU shared-memory tensor and each job sends only its handle; a trained model
comes back the same way. CUDA tensors never cross a queue (the original framework's
memory leak): a worker on a GPU copies the CPU weights to its device itself.

Workers are forked from the zygote where one runs (:mod:`~lightning_asyncfl.executors.zygote`:
a fork of the run's own process made before any computation, sharing its imported torch
and Lightning; a worker is ready in a fraction of a second), else from a fork server, or
spawned. A worker unpickles what the run names: the model's class must be importable by
the workers (a module on ``PYTHONPATH``, not a notebook cell or a function), and a script
must start the run under ``if __name__ == "__main__":`` (a fork server or a spawned
worker re-imports it; start-up then costs seconds per worker, each importing torch).
:data:`IMPORT_HINT` says so when a worker cannot start.

A worker that dies (killed, out of memory) fails the job it was training; the job is
logged and counted as failed, a new worker is started, and the run goes on. Workers
ignore Ctrl-C (the loop shuts them down) and exit by themselves if the loop's process
disappears.
"""

from __future__ import annotations

import logging
import multiprocessing.connection
import os
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.multiprocessing as mp
from torch import Tensor

from lightning_asyncfl.errors import RunFailed, require, require_choice
from lightning_asyncfl.executors import zygote
from lightning_asyncfl.executors.base import TrainerFactory, WorkerLost
from lightning_asyncfl.executors.pool import ParallelExecutor, remote_error
from lightning_asyncfl.state import Job, JobResult, ModelState

log = logging.getLogger(__name__)

#: seconds a worker may take to import torch and build its trainer
START_TIMEOUT = 300.0
#: what a spawned worker needs from the script and modules that started the run
IMPORT_HINT = (
    "each worker is a new Python process (forked from the zygote or a fork server, or spawned) that imports the module defining the model, data and callbacks by name and "
    "unpickles them: (1) a script must start the run under `if __name__ == \"__main__\":` (a worker re-imports the script, "
    "and without the guard it would start the run again); (2) those classes must be importable by the workers: defined at "
    "the top level of a module on PYTHONPATH (PYTHONPATH=. for ./mymodels.py), not inside a function, a notebook cell or "
    "the script run as __main__ (Ray's executor=ray sends those by value); or use executor=threads or executor=sequential, "
    "which need neither. Starting the workers costs seconds each (they import torch; summary.json: executor_start_time)"
)
#: how worker processes may start
START_METHODS = ("auto", "zygote", "forkserver", "spawn")
#: what the fork server imports once, before it forks any worker
PRELOAD = ("torch", "lightning_asyncfl.client", "lightning_asyncfl.executors.processes")


def shared_copy(state: ModelState) -> ModelState:
    """A CPU copy of ``state`` whose tensors live in shared memory (sent by handle, not by value)."""

    def share(t: Tensor) -> Tensor:
        return t.detach().to("cpu", copy=True).share_memory_()

    return ModelState(
        share(state.flat), state.layout,
        {k: share(v) for k, v in state.extras.items()}, {k: share(v) for k, v in state.side.items()},
    )  # fmt: skip


def _exit_with_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)
        time.sleep(0.5)


def _die_with_parent(parent_pid: int) -> None:
    """Have Linux kill this process the moment its parent dies (``PR_SET_PDEATHSIG``).

    A thread that polls the parent's pid is the fallback elsewhere; on its own it can be
    starved for seconds by a busy worker.
    """
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        pass
    if os.getppid() != parent_pid:  # it died before we asked
        os._exit(1)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()


def _worker_main(conn: Any, make_trainer: TrainerFactory, device: str | None, num_threads: int | None, parent_pid: int | None) -> None:
    """A worker process: build one trainer, then train the jobs the loop sends until told to stop.

    ``parent_pid``: the loop's process, the worker's parent when spawned; None when forked
    by the zygote or the fork server, its parent (which exits when the loop's process
    does, and the worker with it).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C and SIGTERM (sent to the whole job by Slurm) are the loop's to handle
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(parent_pid if parent_pid is not None else os.getppid())
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        trainer = make_trainer(device=device) if device is not None else make_trainer()
    except BaseException as error:
        conn.send(("error", None, f"{type(error).__name__}: {error}\n{traceback.format_exc()}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        job, base, client_state = message
        try:
            result = trainer.train(job, base, client_state)
        except Exception as error:
            conn.send(("error", job.job_id, f"{type(error).__name__}: {error}"))
            continue
        conn.send(("ok", job.job_id, result))
        del result, base, client_state, message


def _unpicklable(error: BaseException) -> TypeError:
    return TypeError(
        "executor=processes sends the model, data and trainer settings to its worker processes, so they must be picklable "
        f"({type(error).__name__}: {error}); " + IMPORT_HINT
    )


@dataclass
class _Process:
    process: Any
    conn: Any
    device: str | None
    pid: int | None = None


class ProcessExecutor(ParallelExecutor):
    """N worker processes, each with its own trainer.

    Args:
        workers: number of worker processes.
        num_threads: PyTorch intra-op threads in each worker.
        devices: devices the workers train on, round-robin (``[cuda:0, cuda:1]``), ``auto``
            for every visible GPU, null for the client accelerator's default device.
        start_method: ``auto`` (the default): ``zygote`` where one runs, else ``forkserver``;
            ``zygote``: every worker forked from a process forked from the run's own before
            any computation (:mod:`lightning_asyncfl.executors.zygote`; ``python -m
            lightning_asyncfl`` starts it, a script calls :func:`start_zygote`), sharing the
            run's imported torch and Lightning; ``forkserver``: one fork server imports them
            once more and forks every worker; ``spawn``: every worker a fresh interpreter
            that imports them again (about 550 MiB each, see docs/benchmarks.md).
    """

    def __init__(self, *, workers: int = 2, num_threads: int | str | None = "auto", devices: Any = None, start_method: str = "auto") -> None:
        require_choice("start_method", start_method, START_METHODS)
        if start_method == "zygote":
            require(zygote.current() is not None, "start_method", start_method,
                    "auto, forkserver or spawn here: no zygote runs in this process (it must be started before any torch computation: "
                    "python -m lightning_asyncfl does, a script calls lightning_asyncfl.executors.start_zygote() first thing)")
        super().__init__(workers=workers, num_threads=num_threads, devices=devices)
        self.start_method = start_method
        fallback = "spawn" if start_method == "spawn" or "forkserver" not in mp.get_all_start_methods() else "forkserver"  # Windows: spawn
        self._context = mp.get_context(fallback)
        if fallback == "forkserver":  # imported once by the fork server; its workers share those pages
            self._context.set_forkserver_preload(list(PRELOAD))
        self._make_trainer: TrainerFactory | None = None
        #: how the last worker started: zygote, forkserver or spawn
        self.started_with: str | None = None

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        return [h.process.pid for h in self._handles if h.process.is_alive()]

    def _open(self, index: int, device: str | None, make_trainer: TrainerFactory) -> _Process:
        self._make_trainer = make_trainer
        forker = zygote.current() if self.start_method in ("auto", "zygote") else None
        if forker is not None:
            try:
                return self._fork(forker, index, device, make_trainer)
            except (EOFError, OSError) as error:  # the zygote is gone (killed)
                if self.start_method == "zygote":
                    raise RunFailed(f"the zygote could not fork worker process {index}: {error}") from None
                log.warning("the zygote could not fork worker process %d (%s); starting it from the fork server", index, error)
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_worker_main, args=(child, make_trainer, device, self.num_threads, os.getpid() if self._context.get_start_method() == "spawn" else None),
            name=f"asyncfl-worker-{index}", daemon=True,
        )  # fmt: skip
        try:
            process.start()
        except (pickle.PicklingError, AttributeError, TypeError) as error:
            raise _unpicklable(error) from error
        finally:
            child.close()
        self.started_with = self._context.get_start_method()
        return _Process(process, parent, device)

    def _fork(self, forker: zygote.Zygote, index: int, device: str | None, make_trainer: TrainerFactory) -> _Process:
        process, conn = forker.fork(f"asyncfl-worker-{index}")
        try:
            conn.send((make_trainer, device, self.num_threads))
        except (pickle.PicklingError, AttributeError, TypeError) as error:
            process.kill()
            process.join(timeout=5)
            conn.close()
            raise _unpicklable(error) from error
        self.started_with = "zygote"
        return _Process(process, conn, device)

    def _ready(self, handles: list[_Process]) -> None:
        for handle in handles:
            self._await_ready(handle)

    def _await_ready(self, handle: _Process) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        name = handle.process.name
        while not handle.conn.poll(0.2):
            if not handle.process.is_alive():
                raise RunFailed(f"worker process {name} exited with code {handle.process.exitcode} before it was ready (its error is printed above); {IMPORT_HINT}")
            if time.monotonic() > deadline:
                raise RunFailed(f"worker process {name} was not ready after {START_TIMEOUT:.0f}s")
        try:
            message = handle.conn.recv()
        except (EOFError, OSError):  # it died (killed, out of memory) while starting
            handle.process.join(timeout=5)
            raise RunFailed(f"worker process {name} exited with code {handle.process.exitcode} before it was ready (its error is printed above); {IMPORT_HINT}") from None
        if message[0] != "ready":
            raise RunFailed(f"worker process {name} could not build its trainer: {message[2]}")
        handle.pid = message[1]

    def _share(self, base: ModelState) -> ModelState:
        return shared_copy(base)

    def _execute(self, index: int, handle: _Process, job: Job, payload: ModelState, client_state: Mapping[str, Tensor] | None) -> JobResult:
        where = f"worker process {index} (pid {handle.pid})"
        try:
            handle.conn.send((job, payload, dict(client_state or {})))
        except (BrokenPipeError, ConnectionResetError, EOFError) as error:
            raise WorkerLost(f"{where} is gone: {error}") from None
        while True:
            ready = multiprocessing.connection.wait([handle.conn, handle.process.sentinel], timeout=0.5)
            if handle.conn in ready:
                try:
                    message = handle.conn.recv()
                except (EOFError, OSError):
                    ready = [handle.process.sentinel]
                else:
                    break
            if handle.process.sentinel in ready or not handle.process.is_alive():
                handle.process.join(timeout=1)
                raise WorkerLost(f"{where} died (exit code {handle.process.exitcode})")
            if self._stopping:
                raise WorkerLost(f"{where} stopped by shutdown")
        kind, job_id, body = message
        if job_id != job.job_id:
            raise RuntimeError(f"{where} answered for job {job_id} while training job {job.job_id}")
        if kind == "error":
            raise remote_error(where, job, body)
        return body

    def __repr__(self) -> str:
        used = f" ({self.started_with})" if self.started_with not in (None, self.start_method) else ""
        return f"{super().__repr__()[:-1]}, start_method={self.start_method}{used})"

    def _reopen(self, index: int, handle: _Process) -> _Process:
        self._close([handle])
        assert self._make_trainer is not None
        new = self._open(index, handle.device, self._make_trainer)
        self._await_ready(new)
        return new

    def _close(self, handles: list[_Process]) -> None:
        for handle in handles:
            try:
                handle.conn.send(None)
            except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
                pass
        deadline = time.monotonic() + 2.0
        for handle in handles:
            handle.process.join(timeout=max(0.0, deadline - time.monotonic()))
        for handle in handles:
            if handle.process.is_alive():  # busy with a job nobody waits for any more
                handle.process.kill()
                handle.process.join(timeout=5)
            handle.conn.close()


def prestart(executor: Any) -> None:
    """Start the zygote if the executor config ``executor`` (a node with ``_target_``) will fork workers from it.

    Called by ``python -m lightning_asyncfl`` before its first run, while no torch
    computation has happened in the process; a target that does not resolve is left for
    the run's checks to report.
    """
    if executor is None or executor.get("start_method", "auto") not in ("auto", "zygote"):
        return
    try:
        from hydra.utils import get_class

        target = get_class(str(executor.get("_target_")))
    except Exception:
        return
    if isinstance(target, type) and issubclass(target, ProcessExecutor):
        zygote.start_zygote()
