"""The loop's event order, staleness, stop rules and fault handling, on scripted delays."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from lightning_asyncfl.aggregators import FedAsync, FedBuff
from lightning_asyncfl.delays import ConstantDelay, NoDelay
from lightning_asyncfl.errors import RunFailed
from lightning_asyncfl.schedulers import RoundScheduler
from lightning_asyncfl.schedulers.base import Scheduler
from tests.helpers import FirstIdle, Recorder, ScriptedDelay, make_loop, toy_data


def test_arrivals_are_handled_in_virtual_time_order_with_staleness_current_minus_base():
    # Prepare: 3 clients, 2 in flight; job 0 is slow (5 s), every other job takes 1 s
    recorder = Recorder()
    loop = make_loop(FedAsync(alpha=0.5), FirstIdle(2), ScriptedDelay([5.0]), max_steps=5, callbacks=[recorder])

    # Execute
    summary = loop.run()

    # Assert: job 0 (client 0, t=5) arrives after jobs 1, 2, 3, 4 of client 1 and is 4 versions stale
    assert recorder.arrivals == [
        (1, 1, 1.0, 0, "accepted"),
        (2, 1, 2.0, 0, "accepted"),
        (3, 1, 3.0, 0, "accepted"),
        (4, 1, 4.0, 0, "accepted"),
        (0, 0, 5.0, 4, "accepted"),
    ]
    assert recorder.versions == [1, 2, 3, 4, 5]
    assert summary["steps"] == 5 and summary["stop_reason"] == "max_steps"
    assert summary["virtual_time"] == 5.0
    assert summary["dispatched"] == 6 and summary["in_flight"] == 1  # job 5 was dispatched at t=5


def test_equal_arrival_times_are_handled_in_job_id_order():
    recorder = Recorder()
    loop = make_loop(FedAsync(alpha=0.5), FirstIdle(3), ConstantDelay(value=2.0), max_steps=6, callbacks=[recorder])

    loop.run()

    assert [(job, t) for job, _, t, _, _ in recorder.arrivals] == [(0, 2.0), (1, 2.0), (2, 2.0), (3, 4.0), (4, 4.0), (5, 4.0)]
    # each client is re-dispatched right after its arrival made a new version: jobs 3, 4, 5
    # start from versions 1, 2, 3 and arrive at versions 3, 4, 5
    assert [s for *_, s, _ in recorder.arrivals] == [0, 1, 2, 2, 2, 2]


def test_updates_staler_than_max_staleness_are_dropped_and_counted():
    recorder = Recorder()
    loop = make_loop(FedAsync(alpha=0.5), FirstIdle(2), ScriptedDelay([5.0]), max_steps=5, max_staleness=3, callbacks=[recorder])

    summary = loop.run()

    assert (0, 0, 5.0, 4, "stale") in recorder.arrivals
    assert summary["rejected"] == {"stale": 1}
    assert summary["accepted"] == summary["applied"] == 5


def test_round_scheduler_with_a_larger_buffer_is_flushed_instead_of_deadlocking():
    # FedBuff waits for 3 updates but a round has only 2 clients: after each round nothing is
    # in flight and the round scheduler waits for a new version, so the loop flushes.
    recorder = Recorder()
    loop = make_loop(FedBuff(buffer_size=3), RoundScheduler(clients_per_round=2), ConstantDelay(value=1.0), max_steps=3, callbacks=[recorder])

    summary = loop.run()

    assert summary["steps"] == 3 and summary["applied"] == 6
    assert [t for _, _, t, _, _ in recorder.arrivals] == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]


class Never(Scheduler):
    def _select(self, now, idle, in_flight, version, rng):
        return []


def test_a_scheduler_that_dispatches_nothing_stops_the_run_as_failed_with_a_reason():
    loop = make_loop(FedAsync(), Never(), NoDelay(), max_steps=5)

    with pytest.raises(RunFailed, match="nothing in flight, the scheduler dispatched nothing"):
        loop.run()

    summary = loop.summary()
    assert summary["steps"] == 0 and summary["status"] == "failed"
    assert summary["stop_reason"].startswith("nothing in flight, the scheduler dispatched nothing")


def test_max_updates_and_max_time_budgets_stop_the_run():
    by_updates = make_loop(FedBuff(buffer_size=2), FirstIdle(2), ConstantDelay(value=1.0), max_steps=100, max_updates=5).run()
    by_time = make_loop(FedAsync(), FirstIdle(1), ConstantDelay(value=1.0), max_steps=100, max_time=3.5).run()

    assert (by_updates["stop_reason"], by_updates["client_updates"], by_updates["steps"]) == ("max_updates", 5, 2)
    assert by_updates["buffered"] == 1
    assert (by_time["stop_reason"], by_time["virtual_time"], by_time["steps"]) == ("max_time", 3.5, 3)


def test_target_accuracy_stops_at_the_first_evaluation_that_reaches_it():
    loop = make_loop(FedAsync(alpha=0.9), FirstIdle(3), ConstantDelay(value=1.0), max_steps=500, target_accuracy=0.8, eval_every=1)

    summary = loop.run()

    accuracies = [row["test_accuracy"] for row in loop.history]
    assert summary["stop_reason"] == "target_accuracy"
    assert accuracies[-1] >= 0.8 and all(a < 0.8 for a in accuracies[:-1])


def test_evaluation_runs_at_version_zero_every_eval_every_and_at_the_end():
    loop = make_loop(FedAsync(), FirstIdle(2), ConstantDelay(value=1.0), max_steps=7, eval_every=3)

    loop.run()

    assert [row["version"] for row in loop.history] == [0, 3, 6, 7]
    assert {"test_loss", "test_accuracy", "virtual_time", "client_updates", "wall_time"} <= set(loop.history[0])


def _poisoned_train(client: int) -> TensorDataset:
    train, _, _ = toy_data()
    x = train.tensors[0].clone()
    x[client * 12 : (client + 1) * 12] = float("nan")
    return TensorDataset(x, train.tensors[1])


def test_non_finite_updates_are_rejected_counted_and_never_applied():
    recorder = Recorder()
    loop = make_loop(FedAsync(alpha=1.0), FirstIdle(3), ConstantDelay(value=1.0), max_steps=4, train=_poisoned_train(1), callbacks=[recorder])

    summary = loop.run()

    assert summary["rejected"]["non_finite"] >= 1
    assert {c for _, c, _, _, s in recorder.arrivals if s == "non_finite"} == {1}
    assert bool(torch.isfinite(loop.global_state.flat).all())


def test_a_client_whose_training_raises_is_counted_as_failed_and_the_run_goes_on():
    # labels out of range make cross_entropy raise, for client 2 only
    train, _, _ = toy_data()
    y = train.tensors[1].clone()
    y[24:36] = 99
    recorder = Recorder()
    loop = make_loop(FedAsync(), FirstIdle(3), ConstantDelay(value=1.0), max_steps=4, train=TensorDataset(train.tensors[0], y), callbacks=[recorder])

    summary = loop.run()

    assert summary["failed"] >= 1 and summary["steps"] == 4
    assert {c for _, c, _, _, s in recorder.arrivals if s == "failed"} == {2}


def test_on_client_error_raise_stops_the_run_with_the_error():
    train, _, _ = toy_data()
    y = train.tensors[1].clone()
    y[:] = 99
    loop = make_loop(FedAsync(), FirstIdle(1), ConstantDelay(value=1.0), train=TensorDataset(train.tensors[0], y), on_client_error="raise")

    with pytest.raises(Exception, match="out of bounds|Target 99"):
        loop.run()


def test_snapshots_are_kept_per_version_in_flight_and_released():
    loop = make_loop(FedAsync(), FirstIdle(3), ScriptedDelay([3.0, 1.0, 2.0], rest=2.5), max_steps=9)

    loop.run()

    assert 1 <= loop.peak_snapshots <= 3  # never more versions than jobs in flight
    assert len(loop._snapshots) == len({j.base_version for j in loop._jobs.values()})


def test_all_finite_is_exact_even_when_the_fast_sum_overflows():
    from lightning_asyncfl.loop import all_finite

    assert all_finite(torch.tensor([1.0, -2.0, 3.0]))
    assert all_finite(torch.tensor([3e38, 3e38]))  # the sum overflows to inf, every value is finite
    assert not all_finite(torch.tensor([1.0, float("nan")]))
    assert not all_finite(torch.tensor([float("inf"), float("-inf")]))  # the sum is nan
    assert all_finite(torch.zeros(0))


def test_every_dispatched_job_is_accounted_for_once(make_cfg):
    from lightning_asyncfl.run import run

    # failures, staleness rejections and an unfinished buffer in one run
    summary = run(make_cfg(
        "server=fedbuff", "server.max_steps=15", "server.max_staleness=1", "attack=scale",
        "client_algorithm._target_=tests.executors.faults.FailJobs", "+client_algorithm.jobs=[2,5,8]",
    ))  # fmt: skip

    books = summary["accounting"]
    assert books["failed"] == 3 and summary["rejected"].get("stale", 0) > 0 and books["in_flight"] > 0
    assert books["dispatched"] == books["applied"] + books["rejected"] + books["failed"] + books["buffered"] + books["in_flight"]
    assert books["balanced"] is True


def test_the_view_hands_out_the_loops_sample_counts_without_a_copy_per_call():
    # a callback reads view.num_samples for every update (updates.csv): with a million
    # clients a copy per call was 5 ms per update, so the loop keeps one tuple and hands it out
    loop = make_loop(FedAsync(), FirstIdle(3), NoDelay())

    assert loop.num_samples == (12, 12, 12)
    assert loop.view.num_samples is loop.num_samples
    assert loop.view.num_samples is loop.view.num_samples
