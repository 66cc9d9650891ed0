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
import contextlib
import dataclasses
import heapq
import logging
import math
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

from lightning_asyncfl import checkpoint as ckpt
from lightning_asyncfl import seeding
from lightning_asyncfl.aggregators.base import AsyncAggregator
from lightning_asyncfl.attacks import Attack
from lightning_asyncfl.availability import Availability
from lightning_asyncfl.buffer import UpdateBuffer
from lightning_asyncfl.callbacks.base import Callback
from lightning_asyncfl.context import SetupContext
from lightning_asyncfl.delays import DelayModel
from lightning_asyncfl.errors import Interrupted, RunFailed, checking
from lightning_asyncfl.executors.base import Executor, TrainerFactory
from lightning_asyncfl.plugins import setup_plugins
from lightning_asyncfl.privacy.channel import UploadChannel
from lightning_asyncfl.schedulers.base import Scheduler
from lightning_asyncfl.state import ClientUpdate, Job, JobResult, ModelState
from lightning_asyncfl.system import JobCost, SystemModel

CLOCKS = ["virtual", "wall"]
ON_CLIENT_ERROR = ["skip", "retry", "raise"]
TARGET_METRICS = ["val_accuracy", "test_accuracy"]  # what target_accuracy watches

log = logging.getLogger(__name__)

#: consecutive scheduler wake-ups with nothing in flight and nothing dispatched before the loop gives up
MAX_IDLE_WAKEUPS = 10_000
#: consecutive rounds that close at their deadline with nothing to aggregate before the loop gives up
MAX_EMPTY_ROUNDS = 1_000


def _count(value: Any) -> bool:
    """Whether ``value`` is an integer (a bool is not one here: ``max_steps=true`` is a mistake)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
    max_retries: int = 2,
    clock: str = "virtual",
    target_metric: str = "test_accuracy",
    max_arrivals_without_progress: int | None = 1000,
    max_time_without_progress: float | None = None,
) -> None:
    """Raise :class:`InvalidValue` for every stop rule or loop setting outside what is allowed."""
    with checking() as check:
        check(target_metric in TARGET_METRICS, "target_metric", target_metric, "one of: " + ", ".join(TARGET_METRICS))
        check(_count(max_steps) and max_steps >= 1, "max_steps", max_steps, "an integer >= 1")
        check(max_staleness is None or (_count(max_staleness) and max_staleness >= 0), "max_staleness", max_staleness, "null or an integer >= 0")
        check(_count(eval_every) and eval_every >= 1, "eval_every", eval_every, "an integer >= 1")
        check(max_updates is None or (_count(max_updates) and max_updates >= 1), "max_updates", max_updates, "null or an integer >= 1")
        check(max_time is None or (_number(max_time) and max_time > 0), "max_time", max_time, "null or > 0")
        check(target_accuracy is None or (_number(target_accuracy) and 0 < target_accuracy <= 1), "target_accuracy", target_accuracy, "null or in (0, 1]")
        check(max_arrivals_without_progress is None or (_count(max_arrivals_without_progress) and max_arrivals_without_progress >= 1),
              "max_arrivals_without_progress", max_arrivals_without_progress, "null or an integer >= 1")  # fmt: skip
        check(max_time_without_progress is None or (_number(max_time_without_progress) and max_time_without_progress > 0),
              "max_time_without_progress", max_time_without_progress, "null or > 0")  # fmt: skip
        check(_count(max_retries) and max_retries >= 0, "max_retries", max_retries, "an integer >= 0")
        check(on_client_error in ON_CLIENT_ERROR, "on_client_error", on_client_error, "one of: " + ", ".join(ON_CLIENT_ERROR))
        check(clock in CLOCKS, "clock", clock, "one of: " + ", ".join(CLOCKS))


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
        target_accuracy: stop once ``target_metric`` reaches this (null: no target).
        target_metric: the evaluation metric ``target_accuracy`` watches: ``test_accuracy``
            or ``val_accuracy`` (the server's validation split).
        evaluate_clients: per-client evaluation ``(state, version) -> summary columns``,
            added to the evaluation rows every ``clients_every`` versions and at the end
            (None: none).
        clients_every: versions between per-client evaluations (a multiple of ``eval_every``).
        uplink: what an upload goes through (compression, user-level DP, secure aggregation;
            :mod:`lightning_asyncfl.privacy`); None: nothing.
        on_client_error: a job whose training raised: ``skip`` (log, count as failed, go
            on), ``retry`` (run the same job again, up to ``max_retries`` times, then skip)
            or ``raise`` (stop the run, after a checkpoint of the state just before).
        max_retries: retries of one job with ``on_client_error=retry``.
        callbacks: hooks called on every event.
        attack: malicious clients that corrupt what they send (None: none).
        clock: ``virtual`` (deterministic, the default) or ``wall`` (real seconds, delays
            slept, arrivals in real completion order; not deterministic).
        availability: which clients may be dispatched, and which vanish mid-job (None:
            every client always).
        checkpointer: writes the run state every ``every_n_steps`` versions, at the end,
            on Ctrl-C and when a client error stops the run (None: no checkpoints).
        max_arrivals_without_progress: the no-progress guard: stop the run as failed after
            this many arrivals in a row without a new global version (failed, dropped or
            rejected jobs, or updates of an aggregate that was not installed; accepted
            updates waiting in the buffer do not count). Null: no limit.
        max_time_without_progress: stop the run as failed after this many virtual seconds
            without a new global version (null: no limit).
        context: the :class:`~lightning_asyncfl.context.SetupContext` every plug-in was
            already set up with (``run.build`` sets them up, to report every problem of a
            config at once). None: the loop builds one (its ``num_samples``, ``seed``, the
            initial state's layout and device) and sets every plug-in up in :meth:`run`.
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
        max_retries: int = 2,
        callbacks: Sequence[Callback] = (),
        clock: str = "virtual",
        attack: Attack | None = None,
        availability: Availability | None = None,
        checkpointer: ckpt.Checkpointer | None = None,
        max_arrivals_without_progress: int | None = 1000,
        max_time_without_progress: float | None = None,
        system: SystemModel | None = None,
        time_to_accuracy: Sequence[float] = (),
        target_metric: str = "test_accuracy",
        evaluate_clients: Callable[[ModelState, int], dict[str, float]] | None = None,
        clients_every: int | None = None,
        context: SetupContext | None = None,
        uplink: UploadChannel | None = None,
    ) -> None:
        check_loop_settings(
            max_steps=max_steps, max_staleness=max_staleness, eval_every=eval_every, max_updates=max_updates,
            max_time=max_time, target_accuracy=target_accuracy, on_client_error=on_client_error,
            max_retries=max_retries, clock=clock, target_metric=target_metric, max_arrivals_without_progress=max_arrivals_without_progress,
            max_time_without_progress=max_time_without_progress,
        )  # fmt: skip
        self.target_metric = target_metric
        self.evaluate_clients, self.clients_every = evaluate_clients, clients_every
        self.max_arrivals_without_progress, self.max_time_without_progress = max_arrivals_without_progress, max_time_without_progress
        self.clock = clock
        self.attack = attack if attack is not None else Attack()
        self.availability = availability if availability is not None else Availability()
        self.checkpointer = checkpointer
        self.uplink = uplink if uplink is not None else UploadChannel()  # privacy hook: compression, DP, SecAgg of uploads
        self.system = system if system is not None else SystemModel()  # no devices: the work costs no time, bytes still counted
        self.time_to_accuracy = tuple(float(t) for t in time_to_accuracy)
        self.max_retries = max_retries
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
        if context is not None and (context.num_samples != tuple(self.num_samples) or context.seed != seed):
            raise ValueError(f"context has {context.num_clients} clients and seed {context.seed}; the loop {self.num_clients} clients and seed {seed}")
        self._set_up = context is not None  # plug-ins already set up by whoever made the context
        self.context = context if context is not None else SetupContext.of(self.num_samples, seed, initial_state.layout, initial_state.flat.device)
        self.rng = self.context.stream(seeding.SYSTEM)  # the scheduler's choices
        self.delay_rng = self.context.stream(seeding.DELAY)  # per-client (the delay's setup) and per-job durations
        self.counts: Counter[str] = Counter()
        self.traffic: Counter[str] = Counter()  # bytes sent each way, compute and communication seconds of arrived jobs
        self._empty_rounds = 0
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
        self._last_client_eval = -1
        self._wall_start = 0.0
        self.peak_snapshots = 0
        self.startup_time = 0.0
        self.status = "created"  # running, completed, interrupted, failed
        self.last_checkpoint: Any = None  # path of the last checkpoint written
        self._dropping: set[int] = set()  # jobs whose client vanishes: their event is the drop
        self._idle_wakeups = 0
        self._dispatch_pending = True  # False right after a dispatch, until the next event
        self._safe = False  # at a point where the state is whole (a checkpoint may be taken)
        self._checkpoint_due = False
        self._checkpointed_version: int | None = None
        self._interrupted = 0  # the signal that asked to stop (SIGINT, SIGTERM), 0 for none
        self._futile = 0  # arrivals since the last new global version that brought nothing (the no-progress guard)
        self._progress_time = 0.0  # virtual time of the last new global version
        self._last_problem = ""  # what the last futile arrival was, for the guard's message
        self._asked_again = False  # the scheduler was asked for a new round after an empty one, and has not dispatched yet
        self._failure: str | None = None  # why the run stops as failed (not a stop rule)

    # -- public views --------------------------------------------------------------
    def plugins(self) -> dict[str, Any]:
        """The loop's plug-ins by config key (what :func:`~lightning_asyncfl.plugins.setup_plugins` sets up)."""
        return {"server.aggregator": self.aggregator, "server.scheduler": self.scheduler, "delay": self.delay, "system": self.system,
                "attack": self.attack, "availability": self.availability}  # fmt: skip

    @property
    def in_flight(self) -> int:
        """Number of jobs dispatched and not yet arrived."""
        return len(self._jobs)

    @property
    def wall_time(self) -> float:
        """Seconds of wall-clock time since the run started."""
        return time.perf_counter() - self._wall_start

    # -- the run -------------------------------------------------------------------
    def run(self, resume: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run to a stop rule; returns the summary (also given to ``on_run_end``).

        Args:
            resume: a checkpoint's state (see :meth:`state_dict`) to continue from; the
                run then ends exactly as the uninterrupted run would have.

        Ctrl-C (SIGINT) or SIGTERM finishes the event being handled, writes a checkpoint
        and raises :class:`~lightning_asyncfl.errors.Interrupted` (a KeyboardInterrupt)
        with :attr:`status` ``interrupted``; a second one stops at once. A run that cannot
        go on (the no-progress guard, a dead end) raises
        :class:`~lightning_asyncfl.errors.RunFailed` after a checkpoint, with
        :attr:`status` ``failed``.
        """
        self._wall_start = time.perf_counter()
        if not self._set_up:
            setup_plugins(self.context, self.plugins())
            self._set_up = True
        if resume is not None:
            self.load_state_dict(resume)
        started = time.perf_counter()
        try:
            self.executor.start(self.make_trainer)
        except BaseException:  # workers that cannot start: nothing ran, the run failed
            self.status = "failed"
            raise
        self.startup_time = time.perf_counter() - started
        self.status = "running"
        try:
            with self._sigint_checkpoints():
                self._call("on_run_start", self)
                if resume is None:
                    self._evaluate()
                else:
                    for job_id in sorted(self._jobs):  # train the jobs in flight again: same inputs, same results
                        if job_id not in self._dropping:
                            job = self._jobs[job_id]
                            self.executor.submit(job, self._snapshots[job.base_version][0], self.client_states.get(job.client_id))
                    self._check_stop_rules()
                if self.clock == "wall":
                    self._run_wall_clock()
                else:
                    self._run_events()
                if self._failure is not None:  # the event that found it is over: the state is whole
                    self._safe = True
                    raise RunFailed(self._failure)
                if self._last_eval != self.version:
                    self._evaluate(final=True)
                elif self.evaluate_clients is not None and self._last_client_eval != self.version:
                    self.history[-1].update(self._client_metrics())  # the final model's, for summary.json
            self.status = "completed"
        except KeyboardInterrupt:
            self.status = "interrupted"
            raise
        except BaseException as error:
            self.status = "failed"
            if self._safe:  # stopped before touching the event: the state is whole
                self._checkpoint_quietly()
            else:
                log.error("%s in the middle of an event: the state is not whole, the last checkpoint (%s) is kept", type(error).__name__, self.last_checkpoint)
            raise
        finally:
            for job in list(self._jobs.values()):
                self.executor.cancel(job)
            self.executor.shutdown()
            self._safe = False
            if self.status != "running" and self.status != "completed":  # files closed, loggers finalised
                self._end_quietly()
        self.checkpoint()
        summary = self.summary()
        self._call("on_run_end", self, summary)
        return summary

    def _checkpoint_quietly(self) -> None:
        """A checkpoint for a run that is failing: if it cannot be written (a full disk), the first error stays the one raised."""
        try:
            self.checkpoint()
        except OSError as error:
            log.error("could not write a checkpoint (%s); the last one (%s) is kept", error, self.last_checkpoint)

    def _end_quietly(self) -> None:
        """``on_run_end`` for a run that is being interrupted or failed: a callback's error is logged, not raised over the first."""
        summary = self.summary()
        for callback in self.callbacks:
            try:
                callback.on_run_end(self, summary)
            except OSError as error:  # a full disk: said once, without a traceback per file
                log.error("%s.on_run_end could not write while the run was ending %s: %s", type(callback).__name__, self.status, error)
            except Exception:
                log.exception("%s.on_run_end failed while the run was ending %s", type(callback).__name__, self.status)

    @contextlib.contextmanager
    def _sigint_checkpoints(self) -> Iterator[None]:
        """The first Ctrl-C or SIGTERM asks for a checkpoint and a stop at the next safe point; the second stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._interrupted:
                raise Interrupted(signum)
            self._interrupted = signum
            log.warning("%s: stopping after the current event with a checkpoint (again to stop at once)", signal.Signals(signum).name)

        previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)

    def _safe_point(self) -> None:
        """Between events: the state is whole. Write a due checkpoint; stop here if interrupted."""
        self._safe = True
        if self._interrupted:
            self.checkpoint()
            raise Interrupted(self._interrupted)
        if self._checkpoint_due:
            self._checkpoint_due = False
            self.checkpoint()

    def checkpoint(self) -> Any:
        """Write a checkpoint now (if the loop has a checkpointer); returns its path or None."""
        if self.checkpointer is None:
            return None
        self.last_checkpoint = self.checkpointer.save(self.state_dict(), self.version)
        self._checkpointed_version = self.version
        return self.last_checkpoint

    def _run_events(self) -> None:
        while self.stop_reason is None:
            if self._dispatch_pending:
                self._dispatch()
                self._dispatch_pending = False
            self._safe_point()
            arrival = self._arrivals[0][0] if self._arrivals else None
            wake = self._next_wakeup()
            if arrival is None and wake is None:
                self._begin_event()
                self._flush_or_stop()
                continue
            if wake is not None and (arrival is None or wake < arrival):
                self._begin_event()
                if self.max_time is not None and wake > self.max_time:
                    self._advance(self.max_time)
                    self._stop("max_time")
                    break
                self._advance(wake)
                self._close_round()
                self._idle_wakeups = self._idle_wakeups + 1 if not self._jobs else 0
                if self._idle_wakeups > MAX_IDLE_WAKEUPS:
                    self._fail(f"the scheduler woke {MAX_IDLE_WAKEUPS} times with nothing in flight and dispatched nothing")
                continue
            if self.max_time is not None and arrival > self.max_time:
                self._begin_event()
                self._advance(self.max_time)
                self._stop("max_time")
                break
            job = self._jobs[self._arrivals[0][1]]
            outcome = self._outcome(job)  # may raise (on_client_error=raise) before the state is touched
            self._begin_event()
            heapq.heappop(self._arrivals)
            self._advance(arrival)
            self._idle_wakeups = 0
            self._arrive(self._jobs.pop(job.job_id), outcome)

    def _close_round(self) -> None:
        """A synchronous round's deadline passed: aggregate what arrived in time (stragglers are late)."""
        if not self.scheduler.flush_due(self.now):
            return
        if len(self.buffer):
            self._empty_rounds = 0
            log.info("round deadline at %.3f: aggregating the %d update(s) that arrived in time", self.now, len(self.buffer))
            self._aggregate()
            return
        self._empty_rounds += 1
        if self._empty_rounds >= MAX_EMPTY_ROUNDS:
            self._fail(f"{MAX_EMPTY_ROUNDS} rounds in a row closed at their deadline with no update")

    def _begin_event(self) -> None:
        """An event starts changing the state: no checkpoint until the next safe point, and a dispatch after it."""
        self._safe = False
        self._dispatch_pending = True

    def _next_wakeup(self) -> float | None:
        """The earlier of the scheduler's timer and the next change of availability."""
        times = [t for t in (self.scheduler.next_wakeup(self.now), self.availability.next_change(self.now)) if t is not None]
        return min(times) if times else None

    def _outcome(self, job: Job) -> JobResult | Exception | None:
        """The job's result, the exception its training raised (re-raised with
        ``on_client_error=raise``), or None for a job whose client vanished."""
        if job.job_id in self._dropping:
            return None
        try:
            return self.executor.result(job)
        except Exception as error:
            if self.on_client_error == "raise":
                log.error("job %d (client %d, attempt %d) failed, stopping (on_client_error=raise): %s: %s",
                          job.job_id, job.client_id, job.attempt, type(error).__name__, error)  # fmt: skip
                raise
            return error

    def _flush_or_stop(self) -> None:
        """Nothing in flight and nothing to dispatch: aggregate what the buffer holds, ask the
        scheduler for a new round after an empty one, or stop as failed (a dead end is not a stop rule)."""
        if len(self.buffer):
            log.info("nothing in flight and nothing to dispatch: flushing %d buffered update(s)", len(self.buffer))
            self._aggregate()
            return
        if not self._asked_again and self.scheduler.on_empty_round(self.now):
            log.info("a round came back empty at version %d: a new round", self.version)
            self._asked_again = True
            return
        self._fail(
            f"nothing in flight, the scheduler dispatched nothing and set no wake-up "
            f"(version {self.version}, {len(self._idle)} idle clients)"
        )

    def _run_wall_clock(self) -> None:
        """Handle arrivals as jobs really finish (and their delay, slept for real, is over)."""
        while self.stop_reason is None:
            if self._dispatch_pending:
                self._dispatch()
                self._dispatch_pending = False
            self._safe_point()
            self._begin_event()
            self.now = max(self.now, self.wall_time)
            if self.max_time is not None and self.now >= self.max_time:
                self._stop("max_time")
                break
            wake = self._next_wakeup()
            horizon = min((t for t in (wake, self.max_time) if t is not None), default=None)
            if not self._jobs:
                if wake is None:
                    self._flush_or_stop()
                    continue
                self._idle_wakeups += 1
                if self._idle_wakeups > MAX_IDLE_WAKEUPS:
                    self._fail(f"the scheduler woke {MAX_IDLE_WAKEUPS} times with nothing in flight and dispatched nothing")
                    break
                time.sleep(max(0.0, horizon - self.wall_time))
                continue
            self._idle_wakeups = 0
            now = self.wall_time
            due = [job for job in self._jobs.values() if job.job_id in self._dropping and job.arrival_time <= now]
            if not due:
                timeout = 0.5 if horizon is None else max(0.0, min(0.5, horizon - now))
                trained = [job for job in self._jobs.values() if job.job_id not in self._dropping]
                finished = self.executor.wait(trained, timeout)
                now = self.wall_time
                due = [job for job in finished if job.arrival_time <= now]
                if not due:
                    if finished:  # trained, but its (real) delay is not over yet
                        until = min(job.arrival_time for job in finished)
                        time.sleep(max(0.0, min(until, horizon if horizon is not None else until) - now))
                    continue
            job = min(due, key=lambda j: (j.arrival_time, j.job_id))
            self._advance(max(self.now, now))
            outcome = self._outcome(job)
            self._arrive(self._jobs.pop(job.job_id), outcome)

    def _advance(self, t: float) -> None:
        if t < self.now:
            raise RuntimeError(f"virtual clock would go back from {self.now} to {t}")
        self.now = t

    def _dispatch(self) -> None:
        if self.clock == "wall":
            self.now = max(self.now, self.wall_time)
        # the loop's own sorted list, no copy, when every client is available: schedulers read it (see Scheduler.schedule)
        idle = self.availability.filter(self._idle, self.now)
        in_flight = sorted(job.client_id for job in self._jobs.values())
        chosen = self.scheduler.schedule(self.now, idle, in_flight, self.version, self.rng)
        self._asked_again = self._asked_again and not chosen
        for client in chosen:
            job = self._timed(Job(
                job_id=self._next_job, client_id=client, base_version=self.version,
                seed=seeding.job_seed(self.seed, self._next_job), dispatch_time=self.now, arrival_time=self.now,
            ))  # fmt: skip
            self._next_job += 1
            del self._idle[bisect.bisect_left(self._idle, client)]
            self.counts["dispatched"] += 1
            self._start(job)
            self._call("on_dispatch", self, job)

    def _timed(self, job: Job) -> Job:
        """``job`` with its cost and arrival time: download + compute + upload (the system model) + the delay."""
        base = self._snapshots[job.base_version][0] if job.base_version in self._snapshots else self.global_state
        cost: JobCost = self.system.cost(job.client_id, base.nbytes, self.system.upload_bytes(base), self.delay_rng)
        duration = cost.total + self.delay.duration(job.client_id, self.delay_rng)  # checked finite and >= 0
        if not math.isfinite(self.now + duration):
            raise ValueError(f"job {job.job_id} (client {job.client_id}) would take {duration!r} virtual seconds; check the system and delay settings")
        self.traffic["download_bytes"] += cost.download_bytes
        return dataclasses.replace(
            job, arrival_time=self.now + duration, download_time=cost.download_time, compute_time=cost.compute_time,
            upload_time=cost.upload_time, download_bytes=cost.download_bytes, upload_bytes=cost.upload_bytes, examples=cost.examples,
        )  # fmt: skip

    def _start(self, job: Job) -> None:
        """Put ``job`` in flight: its arrival (or its client's dropout) on the heap, its training on the executor."""
        self._jobs[job.job_id] = job
        drop = self.availability.dropout_time(job)
        if drop is not None:  # the client will vanish: nothing to train, the event is the drop
            self._dropping.add(job.job_id)
            if self.clock == "virtual":
                heapq.heappush(self._arrivals, (drop, job.job_id))
            else:
                self._jobs[job.job_id] = job = dataclasses.replace(job, arrival_time=drop)
            return
        if self.clock == "virtual":
            heapq.heappush(self._arrivals, (job.arrival_time, job.job_id))
        if job.base_version not in self._snapshots:
            if job.base_version != self.version:
                raise RuntimeError(f"job {job.job_id} starts from version {job.base_version}, which is no longer held")
            self._snapshots[job.base_version] = [self.global_state, 0]
        snapshot = self._snapshots[job.base_version]
        snapshot[1] += 1
        self.peak_snapshots = max(self.peak_snapshots, len(self._snapshots))
        self.executor.submit(job, snapshot[0], self.client_states.get(job.client_id))

    def _release(self, job: Job) -> ModelState:
        snapshot = self._snapshots[job.base_version]
        snapshot[1] -= 1
        if snapshot[1] == 0:
            del self._snapshots[job.base_version]
        return snapshot[0]

    def _arrive(self, job: Job, outcome: JobResult | Exception | None) -> None:
        if outcome is None:  # the client vanished mid-job
            self._dropping.discard(job.job_id)
            self._free(job)
            self.counts["dropped"] += 1
            self.availability.on_dropout(job, self.now)
            log.info("job %d (client %d) dropped out at %.3f", job.job_id, job.client_id, self.now)
            self._call("on_dropout", self, job)
            self._no_progress(1, f"job {job.job_id} (client {job.client_id}) dropped out")
            return
        if isinstance(outcome, Exception) and self.on_client_error == "retry" and job.attempt < self.max_retries:
            detail = f"{type(outcome).__name__}: {outcome}"
            retry = self._timed(dataclasses.replace(job, attempt=job.attempt + 1, dispatch_time=self.now))
            log.warning("job %d (client %d) failed, retry %d of %d: %s", job.job_id, job.client_id, retry.attempt, self.max_retries, detail)
            self.counts["retries"] += 1
            self._call("on_retry", self, job, detail)
            self._start(retry)  # holds the base version again before the failed attempt lets go of it
            self._release(job)
            return
        self._free(job)
        base = self._release(job)
        self.counts["arrived"] += 1
        if isinstance(outcome, Exception):
            detail = f"{type(outcome).__name__}: {outcome}"
            self.counts["failed"] += 1
            log.warning("job %d (client %d) failed: %s", job.job_id, job.client_id, detail)
            self._call("on_update_rejected", self, job, "failed", detail, None)
            self._no_progress(1, f"job {job.job_id} (client {job.client_id}) failed: {detail}")
            self._check_budgets()
            return
        staleness = self.version - job.base_version
        result = outcome
        self.traffic["upload_bytes"] += job.upload_bytes
        self.traffic["compute_time"] += job.compute_time
        self.traffic["communication_time"] += job.download_time + job.upload_time
        self.traffic["uploads"] += 1
        state = result.state.to(self.global_state.flat.device)  # from a worker on another device or process
        if job.client_id in self.attack.malicious:
            state = self.attack.apply(job, base, state)
            self.counts["attacked"] += 1
        if result.client_state and all(all_finite(t) for t in result.client_state.values()):
            self.client_states[job.client_id] = dict(result.client_state)
        update = ClientUpdate(job=job, state=state, base=base, num_samples=self.num_samples[job.client_id], metrics=result.metrics, staleness=staleness)
        update = self.uplink.on_upload(update)  # privacy hook: the update as the server receives it (compressed, clipped, noised)
        problem = self._check(update)
        if problem is not None:
            reason, detail = problem
            self.rejected[reason] += 1
            log.warning("update of job %d (client %d) rejected (%s): %s", job.job_id, job.client_id, reason, detail)
            self._call("on_update_rejected", self, job, reason, detail, update)
            self._no_progress(1, f"the update of job {job.job_id} (client {job.client_id}) was rejected as {reason}: {detail}")
        else:
            self.counts["accepted"] += 1
            self.buffer.push(update)
            self._call("on_update_received", self, update)
            if self.aggregator.ready(self.buffer):
                self._aggregate()
        self._check_budgets()

    def _free(self, job: Job) -> None:
        """The job's client is idle again and the scheduler hears that the job is over."""
        bisect.insort(self._idle, job.client_id)
        self.scheduler.on_arrival(job, self.now)

    def _check(self, update: ClientUpdate) -> tuple[str, str] | None:
        if update.state.layout != self.global_state.layout:
            return "shape", "the update's tensors do not match the global model's names and shapes"
        if update.state.flat.shape != self.global_state.flat.shape:  # the layout may be right and the vector not
            return "shape", f"the update's flat vector has {update.state.flat.numel()} values, the global model's {self.global_state.flat.numel()}"
        extras = self.global_state.extras
        if {k: v.shape for k, v in update.state.extras.items()} != {k: v.shape for k, v in extras.items()}:
            return "shape", "the update's integer buffers do not match the global model's names and shapes"
        if update.state.flat.dtype != self.global_state.flat.dtype:
            return "dtype", f"the update's weights are {update.state.flat.dtype}, the global model's {self.global_state.flat.dtype}"
        if not all_finite(update.state.flat):
            return "non_finite", "the update holds NaN or infinite values"
        for name, tensor in update.state.side.items():
            if not all_finite(tensor):
                return "non_finite", f"the update's side tensor {name!r} holds NaN or infinite values"
        if not self.scheduler.accepts(update, self.now):
            return "late", "the job's round closed before its update arrived (over-selection or deadline)"
        if self.max_staleness is not None and update.staleness > self.max_staleness:
            return "stale", f"staleness {update.staleness} > max_staleness {self.max_staleness}"
        return None

    def _aggregate(self) -> None:
        updates = self.buffer.drain()
        new_state = self.uplink.aggregate(self.aggregator, self.global_state, updates, self.version)  # privacy hook: SecAgg, central DP
        if isinstance(new_state, str):  # privacy hook: refused (privacy budget spent, too few SecAgg survivors)
            self.rejected[new_state] += len(updates)
            log.warning("aggregation of %d update(s) at version %d refused: %s", len(updates), self.version, new_state)
            self._stop("target_epsilon") if new_state == "privacy_budget" else self._no_progress(len(updates), f"aggregation refused ({new_state})")
            return
        if not all_finite(new_state.flat):
            self.rejected["non_finite_aggregate"] += len(updates)
            log.warning("aggregate of %d update(s) at version %d is not finite: not installed", len(updates), self.version)
            self._no_progress(len(updates), f"the aggregate of {len(updates)} update(s) at version {self.version} was not finite (non_finite_aggregate)")
            return
        self.global_state = new_state
        self.version += 1
        self._futile, self._progress_time = 0, self.now
        self.counts["applied"] += len(updates)
        if self.checkpointer is not None and self.checkpointer.due(self.version, self._checkpointed_version):
            self._checkpoint_due = True  # written at the next safe point, once this event is whole
        self._call("on_aggregate", self, updates, self.version)
        if self.version % self.eval_every == 0:
            self._evaluate()
        if self.version >= self.max_steps and self.stop_reason is None:
            self._stop("max_steps")

    def _client_metrics(self) -> dict[str, float]:
        self._last_client_eval = self.version
        return self.evaluate_clients(self.global_state, self.version)

    def _evaluate(self, final: bool = False) -> None:
        metrics = self.evaluate_fn(self.global_state)
        if self.evaluate_clients is not None and (final or self.version >= self.max_steps or self.version % self.clients_every == 0):
            metrics = {**metrics, **self._client_metrics()}
        self._last_eval = self.version
        row = {"version": self.version, "client_updates": self.counts["arrived"], "virtual_time": self.now, "wall_time": self.wall_time, **metrics}
        self.history.append(row)
        self._call("on_evaluate", self, self.version, metrics)
        accuracy = metrics.get(self.target_metric)
        if self.target_accuracy is not None and accuracy is not None and accuracy >= self.target_accuracy and self.stop_reason is None:
            self._stop("target_accuracy")

    def _check_stop_rules(self) -> None:
        """Set the stop reason from the stop rules alone (a resumed run may have new ones)."""
        self.stop_reason = None
        accuracy = self.history[-1].get(self.target_metric) if self.history and self._last_eval == self.version else None
        if self.version >= self.max_steps:
            self._stop("max_steps")
        elif self.max_updates is not None and self.counts["arrived"] >= self.max_updates:
            self._stop("max_updates")
        elif self.max_time is not None and self.now >= self.max_time:
            self._stop("max_time")
        elif self.target_accuracy is not None and accuracy is not None and accuracy >= self.target_accuracy:
            self._stop("target_accuracy")

    def _check_budgets(self) -> None:
        if self.max_updates is not None and self.counts["arrived"] >= self.max_updates and self.stop_reason is None:
            self._stop("max_updates")

    def _stop(self, reason: str) -> None:
        self.stop_reason = reason
        log.info("stopping at version %d, virtual time %.3f: %s", self.version, self.now, reason)

    def _fail(self, reason: str) -> None:
        """Stop as failed (once the current event is over): not a stop rule, the run did not get there."""
        if self.stop_reason is None:
            self._failure = reason
            self._stop(reason)

    def _no_progress(self, arrivals: int, what: str) -> None:
        """Count ``arrivals`` that brought nothing; stop as failed when the no-progress guard says so."""
        self._futile += arrivals
        self._last_problem = what
        limit, patience = self.max_arrivals_without_progress, self.max_time_without_progress
        if limit is not None and self._futile >= limit and not len(self.buffer):  # accepted updates still buffered may yet make a version
            self._fail(
                f"no progress: {self._futile} arrivals in a row brought no new global version "
                f"(server.max_arrivals_without_progress={limit}); the last: {what}"
            )  # fmt: skip
        elif patience is not None and self.now - self._progress_time >= patience:
            self._fail(
                f"no progress: no new global version for {patience:g} virtual seconds, since {self._progress_time:.3f} "
                f"(server.max_time_without_progress); the last: {what}"
            )  # fmt: skip

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    # -- checkpoints ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The whole run state as tensors and plain values (what a checkpoint holds).

        Model versions are stored once each, by version: the global model, those jobs in
        flight train from, and those buffered updates started from.
        """
        states = {v: snap[0] for v, snap in self._snapshots.items()}
        for update in self.buffer:
            states.setdefault(update.base_version, update.base)
        return {
            "seed": self.seed,
            "num_clients": self.num_clients,
            "layout": ckpt.layout_to_plain(self.global_state.layout),
            "version": self.version,
            "now": self.now,
            "wall_time": self.wall_time,
            "global": ckpt.model_state_to_plain(self.global_state),
            "states": {v: ckpt.model_state_to_plain(st) for v, st in sorted(states.items())},
            "holds": {v: snap[1] for v, snap in sorted(self._snapshots.items())},
            "jobs": [ckpt.job_to_plain(job) for _, job in sorted(self._jobs.items())],
            "arrivals": [list(a) for a in self._arrivals],
            "dropping": sorted(self._dropping),
            "idle": list(self._idle),
            "buffer": [
                {"job": ckpt.job_to_plain(u.job), "state": ckpt.model_state_to_plain(u.state), "num_samples": u.num_samples,
                 "metrics": dict(u.metrics), "staleness": u.staleness}
                for u in self.buffer
            ],  # fmt: skip
            "client_states": {c: {k: t.detach().cpu() for k, t in st.items()} for c, st in sorted(self.client_states.items())},
            "rng": ckpt.rng_state(self.rng),
            "delay_rng": ckpt.rng_state(self.delay_rng),
            "aggregator": self.aggregator.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "availability": self.availability.state_dict(),
            "callbacks": {f"{i}:{type(cb).__name__}": cb.state_dict() for i, cb in enumerate(self.callbacks)},
            "counts": dict(self.counts),
            "traffic": dict(self.traffic),
            "empty_rounds": self._empty_rounds,
            "rejected": dict(self.rejected),
            "history": [dict(row) for row in self.history],
            "next_job": self._next_job,
            "last_eval": self._last_eval,
            "last_client_eval": self._last_client_eval,
            "peak_snapshots": self.peak_snapshots,
            "idle_wakeups": self._idle_wakeups,
            "dispatch_pending": self._dispatch_pending,
            "progress": {"futile": self._futile, "since": self._progress_time, "last": self._last_problem},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` into this loop (built from the same config, set up, not started)."""
        if state["seed"] != self.seed or state["num_clients"] != self.num_clients:
            raise ValueError(
                f"the checkpoint is of a run with seed {state['seed']} and {state['num_clients']} clients, "
                f"this loop has seed {self.seed} and {self.num_clients} clients"
            )
        layout = ckpt.layout_from_plain(state["layout"])
        if layout != self.global_state.layout:
            raise ValueError("the checkpoint's model does not have this model's tensors (names and shapes differ)")
        device = self.global_state.flat.device
        self.global_state = ckpt.model_state_from_plain(state["global"], layout, device)
        self.version, self.now = int(state["version"]), float(state["now"])
        self._wall_start = time.perf_counter() - float(state["wall_time"])
        states = {int(v): ckpt.model_state_from_plain(p, layout, device) for v, p in state["states"].items()}
        states[self.version] = self.global_state  # one object, as in the uninterrupted run
        self._snapshots = {int(v): [states[int(v)], int(n)] for v, n in state["holds"].items()}
        self._jobs = {job.job_id: job for job in map(ckpt.job_from_plain, state["jobs"])}
        self._arrivals = [(float(t), int(j)) for t, j in state["arrivals"]]
        heapq.heapify(self._arrivals)
        self._dropping = {int(j) for j in state["dropping"]}
        self._idle = [int(c) for c in state["idle"]]
        self.buffer = UpdateBuffer()
        for item in state["buffer"]:
            job = ckpt.job_from_plain(item["job"])
            self.buffer.push(ClientUpdate(
                job=job, state=ckpt.model_state_from_plain(item["state"], layout, device), base=states[job.base_version],
                num_samples=int(item["num_samples"]), metrics=dict(item["metrics"]), staleness=int(item["staleness"]),
            ))  # fmt: skip
        self.client_states = {int(c): dict(st) for c, st in state["client_states"].items()}
        ckpt.set_rng_state(self.rng, state["rng"])
        ckpt.set_rng_state(self.delay_rng, state["delay_rng"])
        self.aggregator.load_state_dict(state["aggregator"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.availability.load_state_dict(state["availability"])
        saved = state["callbacks"]
        for i, cb in enumerate(self.callbacks):
            key = f"{i}:{type(cb).__name__}"
            if key in saved:
                cb.load_state_dict(saved[key])
        self.counts = Counter(state["counts"])
        self.traffic = Counter(state.get("traffic", {}))  # absent in checkpoints written before the system model
        self._empty_rounds = int(state.get("empty_rounds", 0))
        self.rejected = Counter(state["rejected"])
        self.history = [dict(row) for row in state["history"]]
        self._next_job, self._last_eval = int(state["next_job"]), int(state["last_eval"])
        self._last_client_eval = int(state.get("last_client_eval", -1))
        self.peak_snapshots = int(state["peak_snapshots"])
        self._idle_wakeups = int(state["idle_wakeups"])
        self._dispatch_pending = bool(state["dispatch_pending"])
        progress = state.get("progress", {})  # checkpoints from before the no-progress guard have none
        self._futile, self._progress_time = int(progress.get("futile", 0)), float(progress.get("since", self.now))
        self._last_problem = str(progress.get("last", ""))
        self._checkpointed_version = self.version
        self.stop_reason = None

    # -- results -------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Counts, times and metrics of the run so far, as plain values."""
        final = self.history[-1] if self.history else {}
        accuracies = [row["test_accuracy"] for row in self.history if "test_accuracy" in row]
        outcome = {
            "applied": self.counts["applied"], "rejected": sum(self.rejected.values()), "failed": self.counts["failed"],
            "dropped": self.counts["dropped"], "buffered": len(self.buffer), "in_flight": self.in_flight,
        }  # fmt: skip
        return {
            "status": self.status,
            "stop_reason": self.stop_reason,
            "steps": self.version,
            "client_updates": self.counts["arrived"],
            "dispatched": self.counts["dispatched"],
            "accepted": self.counts["accepted"],
            "applied": self.counts["applied"],
            "failed": self.counts["failed"],
            "retries": self.counts["retries"],
            "dropped": self.counts["dropped"],
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
            **self._system_summary(),
            "last_checkpoint": None if self.last_checkpoint is None else str(self.last_checkpoint),
            "final_metrics": {k: v for k, v in final.items() if k.startswith("test_")},
        }

    def _system_summary(self) -> dict[str, Any]:
        """Bytes sent, mean compute and communication seconds per arrived job, and time to each target accuracy."""
        uploads = self.traffic["uploads"]
        reached: dict[str, dict[str, float] | None] = {}
        for target in self.time_to_accuracy:
            row = next((r for r in self.history if r.get("test_accuracy", -math.inf) >= target), None)
            reached[f"{target:g}"] = None if row is None else {
                "virtual_time": row["virtual_time"], "client_updates": row["client_updates"], "version": row["version"]}  # fmt: skip
        return {
            "bytes_down": int(self.traffic["download_bytes"]),
            "bytes_up": int(self.traffic["upload_bytes"]),
            "mean_compute_time": self.traffic["compute_time"] / uploads if uploads else None,
            "mean_communication_time": self.traffic["communication_time"] / uploads if uploads else None,
            "time_to_accuracy": reached,
        }

    def __repr__(self) -> str:
        return f"AsyncFLLoop(version={self.version}, now={self.now:.3f}, in_flight={self.in_flight}, clients={self.num_clients})"
