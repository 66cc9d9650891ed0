"""AsyncFLLoop: the discrete-event orchestrator of asynchronous FL on a virtual clock.

The loop keeps a virtual clock and a heap of job arrivals. At the start and after every
event it asks the scheduler which idle clients to dispatch; a dispatched job is fixed
entirely at that moment (client, base version, seed, arrival time = now + delay), so an
executor may train it at once. Arrivals are handled strictly in (arrival time, job id)
order: the loop takes the job's result, checks it, computes its staleness (current
version − base version), drops it if it is staler than ``max_staleness``, and buffers it;
when the aggregator is ready it drains the buffer into a new global version. Wall-clock
time never enters a decision, so a seed fixes the run bit for bit.

``clock="wall"`` is the other mode, for systems experiments on real hardware: the clock is
wall-clock seconds since the start, a job's delay is slept for real (as the original
framework did with its threads), and arrivals are handled in the order jobs really
finish. It is not deterministic.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch

from lightning_asyncfl import seeding
from lightning_asyncfl.aggregators.base import AsyncAggregator
from lightning_asyncfl.attacks import Attack
from lightning_asyncfl.buffer import UpdateBuffer
from lightning_asyncfl.callbacks.base import Callback
from lightning_asyncfl.delays import DelayModel
from lightning_asyncfl.errors import checking, require_choice
from lightning_asyncfl.executors.base import Executor, TrainerFactory
from lightning_asyncfl.schedulers.base import Scheduler
from lightning_asyncfl.state import ClientUpdate, Job, ModelState

CLOCKS = ["virtual", "wall"]

log = logging.getLogger(__name__)

#: consecutive scheduler wake-ups with nothing in flight and nothing dispatched before the loop gives up
MAX_IDLE_WAKEUPS = 10_000


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether every value of ``tensor`` is finite.

    A NaN or an infinity makes the sum non-finite, so a finite sum (one reduction, no
    temporary the size of the model) proves it; only a non-finite sum, which an overflow
    of finite values can also give, takes the exact element-wise check.
    """
    if tensor.numel() == 0 or bool(torch.isfinite(tensor.sum())):
        return True
    return bool(torch.isfinite(tensor).all())


def check_loop_settings(
    *,
    max_steps: int,
    max_staleness: int | None = None,
    eval_every: int = 1,
    max_updates: int | None = None,
    max_time: float | None = None,
    target_accuracy: float | None = None,
    on_client_error: str = "skip",
    clock: str = "virtual",
) -> None:
    """Raise :class:`InvalidValue` for the first stop rule or loop setting outside what is allowed."""
    with checking() as check:
        check(isinstance(max_steps, int) and max_steps >= 1, "max_steps", max_steps, "an integer >= 1")
        check(max_staleness is None or (isinstance(max_staleness, int) and max_staleness >= 0), "max_staleness", max_staleness, "null or an integer >= 0")
        check(isinstance(eval_every, int) and eval_every >= 1, "eval_every", eval_every, "an integer >= 1")
        check(max_updates is None or (isinstance(max_updates, int) and max_updates >= 1), "max_updates", max_updates, "null or an integer >= 1")
        check(max_time is None or max_time > 0, "max_time", max_time, "null or > 0")
        check(target_accuracy is None or 0 < target_accuracy <= 1, "target_accuracy", target_accuracy, "null or in (0, 1]")
        require_choice("on_client_error", on_client_error, ["skip", "raise"])
        require_choice("clock", clock, CLOCKS)


class AsyncFLLoop:
    """Runs one FL experiment to a stop rule and returns its summary.

    Args:
        initial_state: the global model at version 0.
        aggregator: folds buffered updates into the global model.
        scheduler: decides which idle clients train when.
        delay: virtual duration of each job (set up here with the clients' sample counts).
        executor: runs the jobs.
        make_trainer: builds a ClientTrainer for each of the executor's workers.
        num_samples: training samples of each client (its length is the number of clients).
        evaluate: test metrics of a global state (``test_accuracy`` is used by the stop rule).
        seed: the run's seed (streams for the scheduler, the delays and every job).
        max_steps: stop after this many global versions (server epochs).
        max_staleness: drop updates staler than this (null: keep all).
        eval_every: evaluate every this many versions (and always at the end).
        max_updates: stop after this many arrived client updates (null: no limit).
        max_time: stop at this virtual time (null: no limit).
        target_accuracy: stop once ``test_accuracy`` reaches this (null: no target).
        on_client_error: ``skip`` (log, count, go on) or ``raise``.
        callbacks: hooks called on every event.
        attack: malicious clients that corrupt what they send (None: none).
        clock: ``virtual`` (deterministic, the default) or ``wall`` (real seconds, delays
            slept, arrivals in real completion order; not deterministic).
    """

    def __init__(
        self,
        *,
        initial_state: ModelState,
        aggregator: AsyncAggregator,
        scheduler: Scheduler,
        delay: DelayModel,
        executor: Executor,
        make_trainer: TrainerFactory,
        num_samples: Sequence[int],
        evaluate: Callable[[ModelState], dict[str, float]],
        seed: int = 0,
        max_steps: int = 100,
        max_staleness: int | None = None,
        eval_every: int = 1,
        max_updates: int | None = None,
        max_time: float | None = None,
        target_accuracy: float | None = None,
        on_client_error: str = "skip",
        callbacks: Sequence[Callback] = (),
        clock: str = "virtual",
        attack: Attack | None = None,
    ) -> None:
        check_loop_settings(
            max_steps=max_steps, max_staleness=max_staleness, eval_every=eval_every, max_updates=max_updates,
            max_time=max_time, target_accuracy=target_accuracy, on_client_error=on_client_error, clock=clock,
        )  # fmt: skip
        self.clock = clock
        self.attack = attack if attack is not None else Attack()
        self.aggregator, self.scheduler, self.delay, self.executor = aggregator, scheduler, delay, executor
        self.make_trainer, self.evaluate_fn = make_trainer, evaluate
        self.num_samples = [int(n) for n in num_samples]
        self.num_clients = len(self.num_samples)
        self.seed = seed
        self.max_steps, self.max_staleness, self.eval_every = max_steps, max_staleness, eval_every
        self.max_updates, self.max_time, self.target_accuracy = max_updates, max_time, target_accuracy
        self.on_client_error = on_client_error
        self.callbacks = list(callbacks)

        self.global_state = initial_state
        self.version = 0
        self.now = 0.0
        self.buffer = UpdateBuffer()
        self.rng = seeding.stream(seed, seeding.SYSTEM)  # the scheduler's choices
        self.delay_rng = seeding.stream(seed, seeding.DELAY)  # per-client and per-job durations
        self.counts: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.history: list[dict[str, float]] = []
        self.stop_reason: str | None = None
        self._jobs: dict[int, Job] = {}
        self._arrivals: list[tuple[float, int]] = []
        self._idle = list(range(self.num_clients))  # kept sorted: O(log N) search per change, no sort per event
        self._snapshots: dict[int, list[Any]] = {}  # version -> [state, jobs in flight from it]
        self.client_states: dict[int, dict[str, torch.Tensor]] = {}  # each client's own tensors (SCAFFOLD's c_i)
        self._next_job = 0
        self._last_eval = -1
        self._wall_start = 0.0
        self.peak_snapshots = 0
        self.startup_time = 0.0

    # -- public views --------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Number of jobs dispatched and not yet arrived."""
        return len(self._jobs)

    @property
    def wall_time(self) -> float:
        """Seconds of wall-clock time since the run started."""
        return time.perf_counter() - self._wall_start

    # -- the run -------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run to a stop rule; returns the summary (also given to ``on_run_end``)."""
        self._wall_start = time.perf_counter()
        self.delay.setup(self.num_samples, self.delay_rng)
        self.attack.setup(self.num_clients, seeding.stream(self.seed, seeding.ATTACK))
        self.scheduler.setup(self.num_clients)
        started = time.perf_counter()
        self.executor.start(self.make_trainer)
        self.startup_time = time.perf_counter() - started
        try:
            self._call("on_run_start", self)
            self._evaluate()
            if self.clock == "wall":
                self._run_wall_clock()
            else:
                self._run_events()
            if self._last_eval != self.version:
                self._evaluate()
        finally:
            for job in list(self._jobs.values()):
                self.executor.cancel(job)
            self.executor.shutdown()
        summary = self.summary()
        self._call("on_run_end", self, summary)
        return summary

    def _run_events(self) -> None:
        idle_wakeups = 0
        while self.stop_reason is None:
            self._dispatch()
            if self.stop_reason is not None:
                break
            arrival = self._arrivals[0][0] if self._arrivals else None
            wake = self.scheduler.next_wakeup(self.now)
            if arrival is None and wake is None:
                self._flush_or_stop()
                continue
            if wake is not None and (arrival is None or wake < arrival):
                if self.max_time is not None and wake > self.max_time:
                    self._advance(self.max_time)
                    self._stop("max_time")
                    break
                self._advance(wake)
                idle_wakeups = idle_wakeups + 1 if not self._jobs else 0
                if idle_wakeups > MAX_IDLE_WAKEUPS:
                    self._stop(f"the scheduler woke {MAX_IDLE_WAKEUPS} times with nothing in flight and dispatched nothing")
                continue
            if self.max_time is not None and arrival > self.max_time:
                self._advance(self.max_time)
                self._stop("max_time")
                break
            _, job_id = heapq.heappop(self._arrivals)
            self._advance(arrival)
            idle_wakeups = 0
            self._arrive(self._jobs.pop(job_id))

    def _flush_or_stop(self) -> None:
        """Nothing in flight and nothing to dispatch: aggregate what the buffer holds, or stop."""
        if len(self.buffer):
            log.info("nothing in flight and nothing to dispatch: flushing %d buffered update(s)", len(self.buffer))
            self._aggregate()
            return
        self._stop(
            f"nothing in flight, the scheduler dispatched nothing and set no wake-up "
            f"(version {self.version}, {len(self._idle)} idle clients)"
        )

    def _run_wall_clock(self) -> None:
        """Handle arrivals as jobs really finish (and their delay, slept for real, is over)."""
        idle_wakeups = 0
        while self.stop_reason is None:
            self._dispatch()
            if self.stop_reason is not None:
                break
            self.now = max(self.now, self.wall_time)
            if self.max_time is not None and self.now >= self.max_time:
                self._stop("max_time")
                break
            wake = self.scheduler.next_wakeup(self.now)
            horizon = min((t for t in (wake, self.max_time) if t is not None), default=None)
            if not self._jobs:
                if wake is None:
                    self._flush_or_stop()
                    continue
                idle_wakeups += 1
                if idle_wakeups > MAX_IDLE_WAKEUPS:
                    self._stop(f"the scheduler woke {MAX_IDLE_WAKEUPS} times with nothing in flight and dispatched nothing")
                    break
                time.sleep(max(0.0, horizon - self.wall_time))
                continue
            idle_wakeups = 0
            timeout = 0.5 if horizon is None else max(0.0, min(0.5, horizon - self.wall_time))
            finished = self.executor.wait(list(self._jobs.values()), timeout)
            now = self.wall_time
            due = [job for job in finished if job.arrival_time <= now]
            if not due:
                if finished:  # trained, but its (real) delay is not over yet
                    until = min(job.arrival_time for job in finished)
                    time.sleep(max(0.0, min(until, horizon if horizon is not None else until) - now))
                continue
            job = min(due, key=lambda j: (j.arrival_time, j.job_id))
            self._advance(max(self.now, now))
            self._arrive(self._jobs.pop(job.job_id))

    def _advance(self, t: float) -> None:
        if t < self.now:
            raise RuntimeError(f"virtual clock would go back from {self.now} to {t}")
        self.now = t

    def _dispatch(self) -> None:
        if self.clock == "wall":
            self.now = max(self.now, self.wall_time)
        idle = self._idle  # the loop's own sorted list, no copy: schedulers read it (see Scheduler.schedule)
        in_flight = sorted(job.client_id for job in self._jobs.values())
        chosen = self.scheduler.schedule(self.now, idle, in_flight, self.version, self.rng)
        for client in chosen:
            duration = self.delay.duration(client, self.delay_rng)  # checked finite and >= 0
            job = Job(
                job_id=self._next_job,
                client_id=client,
                base_version=self.version,
                seed=seeding.job_seed(self.seed, self._next_job),
                dispatch_time=self.now,
                arrival_time=self.now + duration,
            )
            self._next_job += 1
            del self._idle[bisect.bisect_left(self._idle, client)]
            self._jobs[job.job_id] = job
            if self.clock == "virtual":
                heapq.heappush(self._arrivals, (job.arrival_time, job.job_id))
            snapshot = self._snapshots.setdefault(self.version, [self.global_state, 0])
            snapshot[1] += 1
            self.peak_snapshots = max(self.peak_snapshots, len(self._snapshots))
            self.counts["dispatched"] += 1
            self.executor.submit(job, self.global_state, self.client_states.get(client))
            self._call("on_dispatch", self, job)

    def _release(self, job: Job) -> ModelState:
        snapshot = self._snapshots[job.base_version]
        snapshot[1] -= 1
        if snapshot[1] == 0:
            del self._snapshots[job.base_version]
        return snapshot[0]

    def _arrive(self, job: Job) -> None:
        bisect.insort(self._idle, job.client_id)
        self.scheduler.on_arrival(job, self.now)
        base = self._release(job)
        self.counts["arrived"] += 1
        staleness = self.version - job.base_version
        try:
            result = self.executor.result(job)
        except Exception as error:  # a client's training failed: count, log, go on (or raise)
            self.counts["failed"] += 1
            detail = f"{type(error).__name__}: {error}"
            log.warning("job %d (client %d) failed: %s", job.job_id, job.client_id, detail)
            self._call("on_update_rejected", self, job, "failed", detail, None)
            if self.on_client_error == "raise":
                raise
            self._check_budgets()
            return
        state = result.state.to(self.global_state.flat.device)  # from a worker on another device or process
        if job.client_id in self.attack.malicious:
            state = self.attack.apply(job, base, state)
            self.counts["attacked"] += 1
        if result.client_state and all(all_finite(t) for t in result.client_state.values()):
            self.client_states[job.client_id] = dict(result.client_state)
        update = ClientUpdate(job=job, state=state, base=base, num_samples=self.num_samples[job.client_id], metrics=result.metrics, staleness=staleness)
        problem = self._check(update)
        if problem is not None:
            reason, detail = problem
            self.rejected[reason] += 1
            log.warning("update of job %d (client %d) rejected (%s): %s", job.job_id, job.client_id, reason, detail)
            self._call("on_update_rejected", self, job, reason, detail, update)
        else:
            self.counts["accepted"] += 1
            self.buffer.push(update)
            self._call("on_update_received", self, update)
            if self.aggregator.ready(self.buffer):
                self._aggregate()
        self._check_budgets()

    def _check(self, update: ClientUpdate) -> tuple[str, str] | None:
        if update.state.layout != self.global_state.layout:
            return "shape", "the update's tensors do not match the global model's names and shapes"
        if not all_finite(update.state.flat):
            return "non_finite", "the update holds NaN or infinite values"
        for name, tensor in update.state.side.items():
            if not all_finite(tensor):
                return "non_finite", f"the update's side tensor {name!r} holds NaN or infinite values"
        if self.max_staleness is not None and update.staleness > self.max_staleness:
            return "stale", f"staleness {update.staleness} > max_staleness {self.max_staleness}"
        return None

    def _aggregate(self) -> None:
        updates = self.buffer.drain()
        new_state = self.aggregator.aggregate(self.global_state, updates, self.version)
        if not all_finite(new_state.flat):
            self.rejected["non_finite_aggregate"] += len(updates)
            log.warning("aggregate of %d update(s) at version %d is not finite: not installed", len(updates), self.version)
            return
        self.global_state = new_state
        self.version += 1
        self.counts["applied"] += len(updates)
        self._call("on_aggregate", self, updates, self.version)
        if self.version % self.eval_every == 0:
            self._evaluate()
        if self.version >= self.max_steps and self.stop_reason is None:
            self._stop("max_steps")

    def _evaluate(self) -> None:
        metrics = self.evaluate_fn(self.global_state)
        self._last_eval = self.version
        row = {"version": self.version, "client_updates": self.counts["arrived"], "virtual_time": self.now, "wall_time": self.wall_time, **metrics}
        self.history.append(row)
        self._call("on_evaluate", self, self.version, metrics)
        accuracy = metrics.get("test_accuracy")
        if self.target_accuracy is not None and accuracy is not None and accuracy >= self.target_accuracy and self.stop_reason is None:
            self._stop("target_accuracy")

    def _check_budgets(self) -> None:
        if self.max_updates is not None and self.counts["arrived"] >= self.max_updates and self.stop_reason is None:
            self._stop("max_updates")

    def _stop(self, reason: str) -> None:
        self.stop_reason = reason
        log.info("stopping at version %d, virtual time %.3f: %s", self.version, self.now, reason)

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    # -- results -------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Counts, times and metrics of the run so far, as plain values."""
        final = self.history[-1] if self.history else {}
        accuracies = [row["test_accuracy"] for row in self.history if "test_accuracy" in row]
        outcome = {
            "applied": self.counts["applied"], "rejected": sum(self.rejected.values()), "failed": self.counts["failed"],
            "buffered": len(self.buffer), "in_flight": self.in_flight,
        }  # fmt: skip
        return {
            "stop_reason": self.stop_reason,
            "steps": self.version,
            "client_updates": self.counts["arrived"],
            "dispatched": self.counts["dispatched"],
            "accepted": self.counts["accepted"],
            "applied": self.counts["applied"],
            "failed": self.counts["failed"],
            "attacked": self.counts["attacked"],
            "rejected": dict(sorted(self.rejected.items())),
            "rejected_total": sum(self.rejected.values()),
            "in_flight": self.in_flight,
            "buffered": len(self.buffer),
            # every dispatched job ends in exactly one of these (see docs/outputs.md)
            "accounting": {"dispatched": self.counts["dispatched"], **outcome, "balanced": self.counts["dispatched"] == sum(outcome.values())},
            "virtual_time": self.now,
            "wall_time": self.wall_time,
            "executor_start_time": self.startup_time,
            "final_accuracy": final.get("test_accuracy"),
            "final_loss": final.get("test_loss"),
            "best_accuracy": max(accuracies) if accuracies else None,
            "peak_snapshots": self.peak_snapshots,
            "final_metrics": {k: v for k, v in final.items() if k.startswith("test_")},
        }

    def __repr__(self) -> str:
        return f"AsyncFLLoop(version={self.version}, now={self.now:.3f}, in_flight={self.in_flight}, clients={self.num_clients})"
