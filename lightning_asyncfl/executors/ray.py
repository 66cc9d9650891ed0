"""RayExecutor: Ray actors, on this machine or on a cluster, with fractional GPUs.

``address: null`` starts a local Ray (or uses the one this process already started);
``address: auto`` joins the cluster that ``ray start --head`` made. Each actor asks Ray
for ``num_cpus`` CPUs and ``num_gpus`` GPUs (fractions allowed: 0.25 puts four actors on
one GPU). The trainer spec (model, dataset, client index lists) is put in Ray's object
store once and reaches each actor once; the global weights are put once per version and
every job of that version passes the same reference. An actor that dies fails the job it
was training (logged, counted) and Ray restarts it.

Classes of a module reach the actors by name: they must be importable on every node
(``runtime_env: {working_dir: .}`` ships this directory; or ``PYTHONPATH`` on the nodes);
classes of a notebook or of the script run as ``__main__`` travel by value (cloudpickle).
A script starts the run under ``if __name__ == "__main__":``. Starting the actors costs
seconds (each imports torch; ``executor_start_time`` in summary.json).

Ray is an optional extra: ``pip install "lightning-asyncfl[ray]"``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from lightning_asyncfl.client import intra_op_threads
from lightning_asyncfl.errors import ConfigError, RunFailed, checking
from lightning_asyncfl.executors.base import TrainerFactory, WorkerLost
from lightning_asyncfl.executors.pool import ParallelExecutor, remote_error
from lightning_asyncfl.state import Job, JobResult, ModelState

log = logging.getLogger(__name__)

#: seconds to wait for Ray to restart a dead actor
RESTART_TIMEOUT = 300.0

INSTALL = 'executor=ray needs Ray, an optional extra: pip install "lightning-asyncfl[ray]" (or pip install "ray>=2.9")'


def import_ray() -> Any:
    """The ``ray`` module, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError as error:
        raise ImportError(INSTALL) from error
    return ray


class _RayWorker:
    """The actor: one trainer, built once from the spec in the object store."""

    def __init__(self, make_trainer: TrainerFactory, num_threads: int | None) -> None:
        self.num_threads = num_threads
        with intra_op_threads(num_threads):
            self.trainer = make_trainer()

    def pid(self) -> int:
        return os.getpid()

    def train(self, job: Job, base: ModelState, client_state: Mapping[str, Tensor]) -> JobResult | tuple[str, str]:
        try:
            with intra_op_threads(self.num_threads):  # per thread: Ray may run methods on another thread
                result = self.trainer.train(job, base, client_state)
        except Exception as error:  # reported as the job's failure, the actor lives on
            return ("error", f"{type(error).__name__}: {error}")
        return JobResult(result.state.to("cpu"), result.metrics, {k: v.to("cpu") for k, v in result.client_state.items()})


class RayExecutor(ParallelExecutor):
    """N Ray actors, each with its own trainer.

    Args:
        workers: number of actors (jobs trained at once).
        num_threads: PyTorch intra-op threads in each actor.
        address: null starts a local Ray; ``auto`` joins a running cluster; or ``ray://host:10001``.
        num_cpus: CPUs Ray reserves for each actor.
        num_gpus: GPUs Ray reserves for each actor (fractions allowed; set
            ``client.accelerator=cuda`` to train on them).
        init_num_cpus: CPUs of a local Ray started here (null: every core).
        runtime_env: Ray's runtime environment for the actors (e.g. ``{working_dir: .}``
            so a cluster's workers can import your own model module).
        connect_timeout: seconds to wait for a cluster at ``address`` to answer before
            the run fails with a message (Ray itself would wait for minutes).
    """

    def __init__(
        self,
        *,
        workers: int = 2,
        num_threads: int | str | None = "auto",
        address: str | None = None,
        num_cpus: float = 1,
        num_gpus: float = 0,
        init_num_cpus: int | None = None,
        runtime_env: dict[str, Any] | None = None,
        connect_timeout: float = 30.0,
    ) -> None:
        with checking() as check:
            check(connect_timeout > 0, "connect_timeout", connect_timeout, "> 0 (seconds)")
            check(num_cpus >= 0, "num_cpus", num_cpus, ">= 0")
            check(num_gpus >= 0, "num_gpus", num_gpus, ">= 0 (fractions such as 0.25 allowed)")
            check(init_num_cpus is None or (isinstance(init_num_cpus, int) and init_num_cpus >= 1), "init_num_cpus", init_num_cpus, "null or an integer >= 1")
            super().__init__(workers=workers, num_threads=num_threads, devices=None)
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus
        self.init_num_cpus, self.runtime_env, self.connect_timeout = init_num_cpus, runtime_env, float(connect_timeout)
        self._ray: Any = None
        self._started_ray = False

    def start(self, make_trainer: TrainerFactory) -> None:
        ray = self._ray = import_ray()
        if not ray.is_initialized():
            self._check_reachable()
            try:
                ray.init(
                    address=self.address, num_cpus=self.init_num_cpus if self.address is None else None,
                    runtime_env=self.runtime_env, include_dashboard=False, log_to_driver=True,
                )  # fmt: skip
            except (ConnectionError, RuntimeError, TimeoutError, ValueError) as error:
                raise self._unreachable(f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}") from None
            self._started_ray = True
        log.info("Ray resources: %s", ray.cluster_resources())
        self._spec = ray.put(make_trainer)  # the dataset enters the object store once
        self._actor = ray.remote(_RayWorker)
        super().start(make_trainer)

    def _check_reachable(self) -> None:
        """A cluster given as ``host:port`` (or ``ray://host:port``) answers within ``connect_timeout`` seconds."""
        if self.address in (None, "auto", "local"):
            return
        host, _, port = str(self.address).removeprefix("ray://").rpartition(":")
        if not host or not port.isdigit():
            return  # a form Ray itself understands (a file, a name): left to ray.init
        try:
            socket.create_connection((host, int(port)), timeout=self.connect_timeout).close()
        except OSError as error:
            raise self._unreachable(f"{error.strerror or type(error).__name__} within {self.connect_timeout:g}s") from None

    def _unreachable(self, why: str) -> ConfigError:
        return ConfigError([
            f"executor.address: cannot reach a Ray cluster at {self.address!r} ({why}); start one with `ray start --head` "
            "and give its address, or use executor.address=null for a local Ray"
        ])  # fmt: skip

    def _open(self, index: int, device: str | None, make_trainer: TrainerFactory) -> Any:
        return self._actor.options(
            num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_restarts=-1, max_task_retries=0,
        ).remote(self._spec, self.num_threads)  # fmt: skip

    def _ready(self, handles: list[Any]) -> None:
        try:
            self.actor_pids = self._ray.get([h.pid.remote() for h in handles])
        except Exception as error:  # an actor could not unpickle the trainer spec (a module it cannot import), ...
            first = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            raise RunFailed(
                f"Ray actors could not start ({type(error).__name__}: {first}); each actor unpickles the model, data and "
                "callbacks: classes of a module travel by name and must be importable on every node (executor.runtime_env="
                "{working_dir: .} ships this directory, {py_modules: [...]} given modules; or set PYTHONPATH on the nodes), "
                "classes defined in a notebook or the script run as __main__ travel by value; a script must start the run under "
                "`if __name__ == \"__main__\":`. Starting actors costs seconds each (summary.json: executor_start_time)"
            ) from None

    def _share(self, base: ModelState) -> Any:
        return self._ray.put(base.to("cpu"))  # once per version; jobs pass the reference

    def _execute(self, index: int, handle: Any, job: Job, payload: Any, client_state: Mapping[str, Tensor] | None) -> JobResult:
        ray = self._ray
        cpu_state = {k: v.to("cpu") for k, v in (client_state or {}).items()}
        ref = handle.train.remote(job, payload, cpu_state)
        while True:
            try:
                outcome = ray.get(ref, timeout=0.5)
                break
            except ray.exceptions.GetTimeoutError:
                if self._stopping:
                    ray.cancel(ref, force=False)
                    raise WorkerLost(f"Ray actor {index} stopped by shutdown") from None
            except ray.exceptions.RayActorError as error:
                raise WorkerLost(f"Ray actor {index} died: {type(error).__name__}") from None
        if isinstance(outcome, tuple):
            raise remote_error(f"Ray actor {index}", job, outcome[1])
        return outcome

    def _reopen(self, index: int, handle: Any) -> Any:
        """Wait until Ray has restarted the actor, so the next job does not meet it restarting."""
        ray = self._ray
        deadline = time.monotonic() + RESTART_TIMEOUT
        while not self._stopping:
            try:
                self.actor_pids[index] = ray.get(handle.pid.remote(), timeout=5)
                return handle
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as error:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Ray actor {index} did not come back after {RESTART_TIMEOUT:.0f}s: {error}") from None
                time.sleep(0.2)
        return handle

    def _close(self, handles: list[Any]) -> None:
        if self._ray is None:
            return
        for handle in handles:
            try:
                self._ray.kill(handle, no_restart=True)
            except Exception as error:  # already gone
                log.debug("killing a Ray actor: %s", error)

    def shutdown(self) -> None:
        super().shutdown()
        if self._started_ray and self._ray is not None and self._ray.is_initialized():
            self._ray.shutdown()
        self._started_ray = False

    def __repr__(self) -> str:
        return (
            f"RayExecutor(workers={self.workers}, num_threads={self.num_threads}, address={self.address!r}, "
            f"num_cpus={self.num_cpus}, num_gpus={self.num_gpus})"
        )
