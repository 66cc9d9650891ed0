"""Dispatch: who trains when, and how long each job takes.

At the start and after every event the loop asks the :class:`Dispatcher`: the scheduler
chooses among the idle clients the availability model lets through; each chosen client
gets a :class:`~lightning_asyncfl.state.Job` fixed entirely at that moment (client, base
version, seed derived from the run's seed and the job id, arrival time = now + the system
model's download, compute and upload time + the delay model's duration), goes in flight,
and its training starts on the executor at once.
"""

from __future__ import annotations

import bisect
import dataclasses
import math

import numpy as np

from lightning_asyncfl import seeding
from lightning_asyncfl.availability import Availability
from lightning_asyncfl.delays import DelayModel
from lightning_asyncfl.executors.base import Executor
from lightning_asyncfl.runstate import RunState
from lightning_asyncfl.schedulers.base import Scheduler
from lightning_asyncfl.state import Job
from lightning_asyncfl.system import JobCost, SystemModel


class Dispatcher:
    """Chooses clients, times their jobs and starts them.

    Args:
        scheduler, availability, system, delay, executor: the run's plug-ins.
        seed: the run's seed (each job's seed derives from it and the job id).
        rng: the run's system stream (the scheduler's choices).
        delay_rng: the run's delay stream (the system model's jitter, the delays).
    """

    def __init__(self, *, scheduler: Scheduler, availability: Availability, system: SystemModel, delay: DelayModel,
                 executor: Executor, seed: int, rng: np.random.Generator, delay_rng: np.random.Generator) -> None:  # fmt: skip
        self.scheduler, self.availability, self.system, self.delay, self.executor = scheduler, availability, system, delay, executor
        self.seed, self.rng, self.delay_rng = seed, rng, delay_rng

    def dispatch(self, state: RunState) -> list[Job]:
        """Ask the scheduler at ``state.now`` and start a job for each client it chooses; returns the jobs."""
        # the run's own sorted list, no copy, when every client is available: schedulers read it (see Scheduler.schedule)
        idle = self.availability.filter(state.idle, state.now)
        chosen = self.scheduler.schedule(state.now, idle, state.inflight.clients(), state.version, self.rng)
        jobs = []
        for client in chosen:
            job = self.timed(state, Job(
                job_id=state.next_job, client_id=client, base_version=state.version,
                seed=seeding.job_seed(self.seed, state.next_job), dispatch_time=state.now, arrival_time=state.now,
            ))  # fmt: skip
            state.next_job += 1
            del state.idle[bisect.bisect_left(state.idle, client)]
            state.counts["dispatched"] += 1
            self.start(state, job)
            jobs.append(job)
        return jobs

    def timed(self, state: RunState, job: Job) -> Job:
        """``job`` with its cost and arrival time: download + compute + upload (the system model) + the delay."""
        base = state.inflight.base(job.base_version, state.global_state)
        cost: JobCost = self.system.cost(job.client_id, base.nbytes, self.system.upload_bytes(base), self.delay_rng)
        duration = cost.total + self.delay.duration(job.client_id, self.delay_rng)  # checked finite and >= 0
        if not math.isfinite(state.now + duration):
            raise ValueError(f"job {job.job_id} (client {job.client_id}) would take {duration!r} virtual seconds; check the system and delay settings")
        state.traffic["download_bytes"] += cost.download_bytes
        return dataclasses.replace(
            job, arrival_time=state.now + duration, download_time=cost.download_time, compute_time=cost.compute_time,
            upload_time=cost.upload_time, download_bytes=cost.download_bytes, upload_bytes=cost.upload_bytes, examples=cost.examples,
        )  # fmt: skip

    def start(self, state: RunState, job: Job) -> None:
        """Put ``job`` in flight: its event (arrival, or its client's dropout) in order, its training on the executor."""
        base = state.inflight.start(job, state.global_state, state.version, self.availability.dropout_time(job))
        if base is not None:  # None: the client will vanish, nothing to train, the event is the drop
            self.executor.submit(job, base, state.client_states.get(job.client_id))

    def free(self, state: RunState, job: Job) -> None:
        """The job's client is idle again and the scheduler hears that the job is over."""
        bisect.insort(state.idle, job.client_id)
        self.scheduler.on_arrival(job, state.now)
