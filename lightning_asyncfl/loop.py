"""AsyncFLLoop: the discrete-event orchestrator of asynchronous FL.

The loop is small parts, each in its own module:

- a clock (:mod:`lightning_asyncfl.clock`): one event loop, two sources of time. With the
  virtual clock (the default) arrivals are handled strictly in (arrival time, job id)
  order and wall-clock time never enters a decision, so a seed fixes the run bit for bit;
  the wall clock (``clock="wall"``) sleeps each job's delay for real and handles arrivals
  in the order jobs really finish;
- the jobs in flight (:mod:`lightning_asyncfl.inflight`), holding the model versions they
  train from in reference-counted snapshots;
- admission (:mod:`lightning_asyncfl.admission`): the attack, the checks and the
  staleness limit between an arrived job and the buffer;
- the run state (:mod:`lightning_asyncfl.runstate`), which saves and loads itself;
- the settings and stop rules (:mod:`lightning_asyncfl.settings`).

At the start and after every event the loop asks the scheduler which idle clients to
dispatch; a dispatched job is fixed entirely at that moment (client, base version, seed,
arrival time = now + its duration), so an executor may train it at once. At a job's
arrival the loop takes its result, admits it or not, and when the aggregator is ready
drains the buffer into a new global version. Callbacks see the run through a read-only
:class:`~lightning_asyncfl.view.LoopView`.

Why this file is longer than the others (about 590 lines): the public constructor
documents its 30 arguments (about 120 lines with its signature), and what each event
does (a dispatch, an arrival, a drop, a retry, an aggregation, an evaluation, a stop) is
kept here in one place, because every handler changes the run state and calls the
callbacks in the one order that checkpoints and resumed runs rely on.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lightning_asyncfl import checkpoint as ckpt
from lightning_asyncfl import seeding
from lightning_asyncfl.admission import Admission, all_finite
from lightning_asyncfl.aggregators.base import AsyncAggregator
from lightning_asyncfl.attacks import Attack
from lightning_asyncfl.availability import Availability
from lightning_asyncfl.callbacks.base import Callback
from lightning_asyncfl.clock import ARRIVAL, IDLE, MAX_TIME, WAKE, make_clock
from lightning_asyncfl.context import SetupContext
from lightning_asyncfl.delays import DelayModel
from lightning_asyncfl.dispatch import Dispatcher
from lightning_asyncfl.errors import Interrupted, RunFailed
from lightning_asyncfl.executors.base import Executor, TrainerFactory
from lightning_asyncfl.plugins import setup_plugins
from lightning_asyncfl.privacy.channel import UploadChannel
from lightning_asyncfl.runstate import RunState
from lightning_asyncfl.schedulers.base import Scheduler
from lightning_asyncfl.settings import CLOCKS, ON_CLIENT_ERROR, SERVER_KEYS, TARGET_METRICS, LoopSettings, check_loop_settings, no_progress, reached
from lightning_asyncfl.signals import StopRequests
from lightning_asyncfl.state import ClientUpdate, Job, JobResult, ModelState
from lightning_asyncfl.system import SystemModel
from lightning_asyncfl.view import LoopView

__all__ = ["AsyncFLLoop", "all_finite", "check_loop_settings", "CLOCKS", "ON_CLIENT_ERROR", "SERVER_KEYS", "TARGET_METRICS"]

log = logging.getLogger(__name__)

#: consecutive scheduler wake-ups with nothing in flight and nothing dispatched before the loop gives up
MAX_IDLE_WAKEUPS = 10_000
#: consecutive rounds that close at their deadline with nothing to aggregate before the loop gives up
MAX_EMPTY_ROUNDS = 1_000


def _run_attr(name: str, doc: str) -> property:
    """A loop attribute that lives in its :class:`RunState`."""
    return property(lambda self: getattr(self.state, name), lambda self, value: setattr(self.state, name, value), doc=doc)


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
            already set up with (``build.build`` sets them up, to report every problem of a
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
        self.settings = LoopSettings(**{key: value for key, value in locals().items() if key in LoopSettings.__dataclass_fields__}).check()
        self.evaluate_clients, self.clients_every = evaluate_clients, clients_every
        self.attack = attack if attack is not None else Attack()
        self.availability = availability if availability is not None else Availability()
        self.checkpointer = checkpointer
        self.uplink = uplink if uplink is not None else UploadChannel()  # privacy hook: compression, DP, SecAgg of uploads
        self.system = system if system is not None else SystemModel()  # no devices: the work costs no time, bytes still counted
        self.time_to_accuracy = tuple(float(t) for t in time_to_accuracy)
        self.aggregator, self.scheduler, self.delay, self.executor = aggregator, scheduler, delay, executor
        self.make_trainer, self.evaluate_fn = make_trainer, evaluate
        # a tuple: the view hands it out as is (tuple() of a tuple is the same object), no copy per update
        self.num_samples = tuple(int(n) for n in num_samples)
        self.num_clients = len(self.num_samples)
        self.seed = seed
        self.callbacks = list(callbacks)
        self.view = LoopView(self)  # what callbacks see of the run: read-only
        self._clock = make_clock(clock)
        self.admission = Admission(attack=self.attack, scheduler=scheduler, max_staleness=max_staleness)
        self.state = RunState(initial_state, num_clients=self.num_clients, seed=seed, ordered=self._clock.ordered)

        if context is not None and (context.num_samples != self.num_samples or context.seed != seed):
            raise ValueError(f"context has {context.num_clients} clients and seed {context.seed}; the loop {self.num_clients} clients and seed {seed}")
        if context is not None:
            self.num_samples = context.num_samples  # equal: hold one copy of a million counts, not two
        self._set_up = context is not None  # plug-ins already set up by whoever made the context
        self.context = context if context is not None else SetupContext.of(self.num_samples, seed, initial_state.layout, initial_state.flat.device)
        self.rng = self.context.stream(seeding.SYSTEM)  # the scheduler's choices
        self.delay_rng = self.context.stream(seeding.DELAY)  # per-client (the delay's setup) and per-job durations
        self.dispatcher = Dispatcher(scheduler=scheduler, availability=self.availability, system=self.system, delay=delay,
                                     executor=executor, seed=seed, rng=self.rng, delay_rng=self.delay_rng)  # fmt: skip

        self.stop_reason: str | None = None
        self.startup_time = 0.0
        self.status = "created"  # running, completed, interrupted, failed
        self.last_checkpoint: Any = None  # path of the last checkpoint written
        self._safe = False  # at a point where the state is whole (a checkpoint may be taken)
        self._checkpoint_due = False
        self._checkpointed_version: int | None = None
        self._requests = StopRequests()  # Ctrl-C, SIGTERM
        self._asked_again = False  # the scheduler was asked for a new round after an empty one, and has not dispatched yet
        self._failure: str | None = None  # why the run stops as failed (not a stop rule)

    # -- public views --------------------------------------------------------------
    global_state = _run_attr("global_state", "The current global model.")
    version = _run_attr("version", "The current global version.")
    now = _run_attr("now", "The current (virtual) time.")
    buffer = _run_attr("buffer", "Accepted updates waiting for the aggregator.")
    counts = _run_attr("counts", "Counters: dispatched, arrived, accepted, applied, failed, dropped, retries, attacked.")
    rejected = _run_attr("rejected", "Rejected updates by reason.")
    traffic = _run_attr("traffic", "Bytes sent each way, compute and communication seconds of arrived jobs.")
    history = _run_attr("history", "The evaluation rows so far.")
    client_states = _run_attr("client_states", "Each client's own tensors (SCAFFOLD's c_i).")

    @property
    def _jobs(self) -> dict[int, Job]:
        return self.state.inflight.jobs

    @property
    def _snapshots(self) -> Mapping[int, ModelState]:
        return self.state.inflight.snapshots

    @property
    def peak_snapshots(self) -> int:
        """Most distinct global versions held at once for jobs in flight."""
        return self.state.inflight.peak_snapshots

    @property
    def in_flight(self) -> int:
        """Number of jobs dispatched and not yet arrived."""
        return len(self.state.inflight)

    @property
    def wall_time(self) -> float:
        """Seconds of wall-clock time since the run started."""
        return self._clock.wall_time

    def plugins(self) -> dict[str, Any]:
        """The loop's plug-ins by config key (what :func:`~lightning_asyncfl.plugins.setup_plugins` sets up)."""
        return {"server.aggregator": self.aggregator, "server.scheduler": self.scheduler, "delay": self.delay, "system": self.system,
                "attack": self.attack, "availability": self.availability}  # fmt: skip

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
        self._clock.start()
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
            with self._requests.catching():
                self._call("on_run_start")
                if resume is None:
                    self._evaluate()
                else:
                    inflight = self.state.inflight
                    for job_id in sorted(inflight.jobs):  # train the jobs in flight again: same inputs, same results
                        if job_id not in inflight.dropping:
                            job = inflight.jobs[job_id]
                            self.executor.submit(job, inflight.snapshots[job.base_version], self.client_states.get(job.client_id))
                    self._check_stop_rules()
                self._run_events()
                if self._failure is not None:  # the event that found it is over: the state is whole
                    self._safe = True
                    raise RunFailed(self._failure)
                if self.state.last_eval != self.version:
                    self._evaluate(final=True)
                elif self.evaluate_clients is not None and self.state.last_client_eval != self.version:
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
        self._call("on_run_end", summary)
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
                callback.on_run_end(self.view, summary)
            except OSError as error:  # a full disk: said once, without a traceback per file
                log.error("%s.on_run_end could not write while the run was ending %s: %s", type(callback).__name__, self.status, error)
            except Exception:
                log.exception("%s.on_run_end failed while the run was ending %s", type(callback).__name__, self.status)

    def _safe_point(self) -> None:
        """Between events: the state is whole. Write a due checkpoint; stop here if interrupted."""
        self._safe = True
        if self._requests.signum:
            self.checkpoint()
            raise Interrupted(self._requests.signum)
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

    # -- events --------------------------------------------------------------------
    def _run_events(self) -> None:
        """The one event loop: dispatch, then handle the clock's next event, until a stop rule."""
        state = self.state
        while self.stop_reason is None:
            if state.dispatch_pending:
                self._dispatch()
                state.dispatch_pending = False
            self._safe_point()
            event = self._clock.next_event(state.now, state.inflight, self._next_wakeup(), self.max_time, self.executor)
            if event is None:  # the wall clock waited and nothing is due yet: ask the scheduler again
                self._begin_event()
                continue
            if event.kind == ARRIVAL:
                outcome = self._outcome(event.job)  # may raise (on_client_error=raise) before the state is touched
                self._begin_event()
                job = state.inflight.pop(event.job)
                self._advance(event.time)
                state.idle_wakeups = 0
                self._arrive(job, outcome)
                continue
            self._begin_event()
            if event.kind == IDLE:
                self._flush_or_stop()
            elif event.kind == MAX_TIME:
                self._advance(event.time)
                self._stop("max_time")
            elif event.kind == WAKE:
                self._advance(event.time)
                self._close_round()
                state.idle_wakeups = state.idle_wakeups + 1 if not state.inflight.jobs else 0
                if state.idle_wakeups > MAX_IDLE_WAKEUPS:
                    self._fail(f"the scheduler woke {MAX_IDLE_WAKEUPS} times with nothing in flight and dispatched nothing")

    def _close_round(self) -> None:
        """A synchronous round's deadline passed: aggregate what arrived in time (stragglers are late)."""
        if not self.scheduler.flush_due(self.now):
            return
        if len(self.buffer):
            self.state.empty_rounds = 0
            log.info("round deadline at %.3f: aggregating the %d update(s) that arrived in time", self.now, len(self.buffer))
            self._aggregate()
            return
        self.state.empty_rounds += 1
        if self.state.empty_rounds >= MAX_EMPTY_ROUNDS:
            self._fail(f"{MAX_EMPTY_ROUNDS} rounds in a row closed at their deadline with no update")

    def _begin_event(self) -> None:
        """An event starts changing the state: no checkpoint until the next safe point, and a dispatch after it."""
        self._safe = False
        self.state.dispatch_pending = True

    def _next_wakeup(self) -> float | None:
        """The earlier of the scheduler's timer and the next change of availability."""
        times = [t for t in (self.scheduler.next_wakeup(self.now), self.availability.next_change(self.now)) if t is not None]
        return min(times) if times else None

    def _outcome(self, job: Job) -> JobResult | Exception | None:
        """The job's result, the exception its training raised (re-raised with
        ``on_client_error=raise``), or None for a job whose client vanished."""
        if job.job_id in self.state.inflight.dropping:
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
            f"(version {self.version}, {len(self.state.idle)} idle clients)"
        )

    def _advance(self, t: float) -> None:
        if t < self.now:
            raise RuntimeError(f"virtual clock would go back from {self.now} to {t}")
        self.now = t

    def _dispatch(self) -> None:
        self.now = self._clock.now(self.now)
        jobs = self.dispatcher.dispatch(self.state)
        self._asked_again = self._asked_again and not jobs
        for job in jobs:
            self._call("on_dispatch", job)

    # -- arrivals ------------------------------------------------------------------
    def _arrive(self, job: Job, outcome: JobResult | Exception | None) -> None:
        state = self.state
        if state.inflight.dropped(job):  # the client vanished mid-job
            self.dispatcher.free(state, job)
            state.counts["dropped"] += 1
            self.availability.on_dropout(job, self.now)
            log.info("job %d (client %d) dropped out at %.3f", job.job_id, job.client_id, self.now)
            self._call("on_dropout", job)
            self._no_progress(1, f"job {job.job_id} (client {job.client_id}) dropped out")
            return
        if isinstance(outcome, Exception) and self.on_client_error == "retry" and job.attempt < self.max_retries:
            detail = f"{type(outcome).__name__}: {outcome}"
            retry = self.dispatcher.timed(state, dataclasses.replace(job, attempt=job.attempt + 1, dispatch_time=self.now))
            log.warning("job %d (client %d) failed, retry %d of %d: %s", job.job_id, job.client_id, retry.attempt, self.max_retries, detail)
            state.counts["retries"] += 1
            self._call("on_retry", job, detail)
            self.dispatcher.start(state, retry)  # holds the base version again before the failed attempt lets go of it
            state.inflight.release(job)
            return
        self.dispatcher.free(state, job)
        base = state.inflight.release(job)
        state.counts["arrived"] += 1
        if isinstance(outcome, Exception):
            detail = f"{type(outcome).__name__}: {outcome}"
            state.counts["failed"] += 1
            log.warning("job %d (client %d) failed: %s", job.job_id, job.client_id, detail)
            self._call("on_update_rejected", job, "failed", detail, None)
            self._no_progress(1, f"job {job.job_id} (client {job.client_id}) failed: {detail}")
            self._check_budgets()
            return
        result = outcome
        traffic = state.traffic
        traffic["upload_bytes"] += job.upload_bytes
        traffic["compute_time"] += job.compute_time
        traffic["communication_time"] += job.download_time + job.upload_time
        traffic["uploads"] += 1
        received, attacked = self.admission.received(job, base, result.state.to(self.global_state.flat.device))  # from a worker elsewhere
        if attacked:
            state.counts["attacked"] += 1
        if result.client_state and all(all_finite(t) for t in result.client_state.values()):
            state.client_states[job.client_id] = dict(result.client_state)
        update = ClientUpdate(job=job, state=received, base=base, num_samples=self.num_samples[job.client_id],
                              metrics=result.metrics, staleness=state.version - job.base_version)  # fmt: skip
        update = self.uplink.on_upload(update)  # privacy hook: the update as the server receives it (compressed, clipped, noised)
        problem = self.admission.problem(update, self.global_state, self.now)
        if problem is not None:
            reason, detail = problem
            state.rejected[reason] += 1
            log.warning("update of job %d (client %d) rejected (%s): %s", job.job_id, job.client_id, reason, detail)
            self._call("on_update_rejected", job, reason, detail, update)
            self._no_progress(1, f"the update of job {job.job_id} (client {job.client_id}) was rejected as {reason}: {detail}")
        else:
            state.counts["accepted"] += 1
            state.buffer.push(update)
            self._call("on_update_received", update)
            if self.aggregator.ready(state.buffer):
                self._aggregate()
        self._check_budgets()

    # -- aggregation, evaluation, stop rules ---------------------------------------
    def _aggregate(self) -> None:
        state = self.state
        updates = state.buffer.drain()
        new_state = self.uplink.aggregate(self.aggregator, state.global_state, updates, state.version)  # privacy hook: SecAgg, central DP
        if isinstance(new_state, str):  # privacy hook: refused (privacy budget spent, too few SecAgg survivors)
            state.rejected[new_state] += len(updates)
            log.warning("aggregation of %d update(s) at version %d refused: %s", len(updates), state.version, new_state)
            self._stop("target_epsilon") if new_state == "privacy_budget" else self._no_progress(len(updates), f"aggregation refused ({new_state})")
            return
        if not all_finite(new_state.flat):
            state.rejected["non_finite_aggregate"] += len(updates)
            log.warning("aggregate of %d update(s) at version %d is not finite: not installed", len(updates), state.version)
            self._no_progress(len(updates), f"the aggregate of {len(updates)} update(s) at version {state.version} was not finite (non_finite_aggregate)")
            return
        state.global_state = new_state
        state.version += 1
        state.futile, state.progress_time = 0, state.now
        state.counts["applied"] += len(updates)
        if self.checkpointer is not None and self.checkpointer.due(state.version, self._checkpointed_version):
            self._checkpoint_due = True  # written at the next safe point, once this event is whole
        self._call("on_aggregate", updates, state.version)
        if state.version % self.eval_every == 0:
            self._evaluate()
        if state.version >= self.max_steps and self.stop_reason is None:
            self._stop("max_steps")

    def _client_metrics(self) -> dict[str, float]:
        self.state.last_client_eval = self.version
        return self.evaluate_clients(self.global_state, self.version)

    def _evaluate(self, final: bool = False) -> None:
        metrics = self.evaluate_fn(self.global_state)
        if self.evaluate_clients is not None and (final or self.version >= self.max_steps or self.version % self.clients_every == 0):
            metrics = {**metrics, **self._client_metrics()}
        self.state.last_eval = self.version
        row = {"version": self.version, "client_updates": self.counts["arrived"], "virtual_time": self.now, "wall_time": self.wall_time, **metrics}
        self.history.append(row)
        self._call("on_evaluate", self.version, metrics)
        accuracy = metrics.get(self.target_metric)
        if self.target_accuracy is not None and accuracy is not None and accuracy >= self.target_accuracy and self.stop_reason is None:
            self._stop("target_accuracy")

    def _check_stop_rules(self) -> None:
        """Set the stop reason from the stop rules alone (a resumed run may have new ones)."""
        self.stop_reason = None
        reason = reached(self.settings, self.state)
        if reason is not None:
            self._stop(reason)

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
        failure = no_progress(self.settings, self.state, arrivals, what)
        if failure is not None:
            self._fail(failure)

    def _call(self, hook: str, *args: Any) -> None:
        view = self.view
        for callback in self.callbacks:
            getattr(callback, hook)(view, *args)

    # -- checkpoints and results ---------------------------------------------------
    def _stateful(self) -> dict[str, Any]:
        return {"aggregator": self.aggregator, "scheduler": self.scheduler, "availability": self.availability}

    def state_dict(self) -> dict[str, Any]:
        """The whole run state as tensors and plain values (what a checkpoint holds; see :class:`~lightning_asyncfl.runstate.RunState`)."""
        return self.state.state_dict(rngs={"rng": self.rng, "delay_rng": self.delay_rng}, wall_time=self.wall_time,
                                     plugins=self._stateful(), callbacks=self.callbacks)  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` into this loop (built from the same config, set up, not started)."""
        elapsed = self.state.load_state_dict(state, rngs={"rng": self.rng, "delay_rng": self.delay_rng}, plugins=self._stateful(), callbacks=self.callbacks)
        self._clock.start(elapsed)
        self._checkpointed_version = self.version
        self.stop_reason = None

    def summary(self) -> dict[str, Any]:
        """Counts, times and metrics of the run so far, as plain values."""
        return self.state.summary(status=self.status, stop_reason=self.stop_reason, wall_time=self.wall_time, executor_start_time=self.startup_time,
                                  last_checkpoint=self.last_checkpoint, time_to_accuracy=self.time_to_accuracy)  # fmt: skip

    def __repr__(self) -> str:
        return f"AsyncFLLoop(version={self.version}, now={self.now:.3f}, in_flight={self.in_flight}, clients={self.num_clients})"


for _key in LoopSettings.__dataclass_fields__:  # loop.max_steps, loop.clock, ...: read-only, from loop.settings
    setattr(AsyncFLLoop, _key, property(lambda self, key=_key: getattr(self.settings, key), doc=f"``settings.{_key}``"))
