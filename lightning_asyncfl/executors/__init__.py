"""Executors run client jobs: in the loop's thread, in threads, in processes or on Ray actors.

All of them take the same jobs and give the same bytes on the CPU for the same
``num_threads`` per job (see ``docs/scaling.md``).
"""

from lightning_asyncfl.executors.batched import BatchedExecutor
from lightning_asyncfl.executors.base import Executor, JobFailed, WorkerLost
from lightning_asyncfl.executors.pool import ParallelExecutor
from lightning_asyncfl.executors.processes import ProcessExecutor
from lightning_asyncfl.executors.ray import RayExecutor
from lightning_asyncfl.executors.sequential import SequentialExecutor
from lightning_asyncfl.executors.threads import ThreadExecutor
from lightning_asyncfl.executors.zygote import start_zygote

__all__ = ["BatchedExecutor", "Executor", "JobFailed", "ParallelExecutor", "ProcessExecutor", "RayExecutor", "SequentialExecutor", "ThreadExecutor", "WorkerLost", "start_zygote"]
