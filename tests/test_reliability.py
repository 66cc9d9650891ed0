"""Client faults (skip, retry, raise), availability (dropout, check-in, windows), update
validation and the accounting of every dispatched job."""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_asyncfl.attacks import Attack
from lightning_asyncfl.availability import Availability, CheckIn, Dropout, Windows
from lightning_asyncfl.checkpoint import find_checkpoint, load_checkpoint
from lightning_asyncfl.errors import ConfigError, InvalidValue, RunFailed
from lightning_asyncfl.faults import Faults, InjectedFault
from lightning_asyncfl.models.mlp import MLP
from lightning_asyncfl.run import run
from lightning_asyncfl.schedulers.base import Scheduler
from lightning_asyncfl.state import Job, JobResult, ModelState


def _job(job_id: int = 0, seed: int = 123, attempt: int = 0, client: int = 0, start: float = 0.0, end: float = 2.0) -> Job:
    return Job(job_id=job_id, client_id=client, base_version=0, seed=seed, dispatch_time=start, arrival_time=end, attempt=attempt)


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "updates.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


# -- pure parts ---------------------------------------------------------------------------


def test_faults_draw_from_the_job_seed_and_attempt_at_the_configured_rates():
    # Prepare
    faults = Faults(error_rate=0.1, nan_rate=0.05)
    jobs = [_job(job_id=i, seed=1000 + i) for i in range(20_000)]

    # Execute
    draws = [faults.draw(job) for job in jobs]

    # Assert: deterministic, a fresh draw per attempt, and the rates within 4 standard errors
    assert draws == [faults.draw(job) for job in jobs]
    assert [faults.draw(_job(seed=s, attempt=1)) for s in range(200)] != [faults.draw(_job(seed=s)) for s in range(200)]
    for kind, rate in (("error", 0.1), ("nan", 0.05)):
        share = draws.count(kind) / len(draws)
        assert abs(share - rate) < 4 * math.sqrt(rate * (1 - rate) / len(draws))
    failing = next(job for job, d in zip(jobs, draws) if d == "error")
    with pytest.raises(InjectedFault, match=f"job {failing.job_id} "):
        faults.before_training(failing)
    garbage = next(job for job, d in zip(jobs, draws) if d == "nan")
    state = ModelState(torch.ones(4), None)  # type: ignore[arg-type]
    assert torch.isnan(faults.after_training(garbage, JobResult(state)).state.flat).all()


def test_fault_rates_are_checked_together():
    with pytest.raises(ValueError) as error:
        Faults(error_rate=1.5, nan_rate=-0.1)
    assert "error_rate must be in [0, 1], got 1.5" in str(error.value) and "nan_rate must be" in str(error.value)


def test_dropout_vanishes_a_share_p_of_jobs_at_a_point_inside_the_job():
    # Prepare
    dropout = Dropout(p=0.25)
    dropout.setup(10, np.random.default_rng(0))
    jobs = [_job(job_id=i, seed=7 * i + 1, start=3.0, end=5.0) for i in range(8000)]

    # Execute
    times = [dropout.dropout_time(job) for job in jobs]

    # Assert
    dropped = [t for t in times if t is not None]
    assert abs(len(dropped) / len(jobs) - 0.25) < 4 * math.sqrt(0.25 * 0.75 / len(jobs))
    assert all(3.0 <= t < 5.0 for t in dropped)
    assert Dropout(p=0.0).dropout_time(jobs[0]) is None


def test_a_dropped_client_stays_offline_for_offline_seconds():
    # Prepare
    dropout = Dropout(p=1.0, offline=4.0)
    dropout.setup(5, np.random.default_rng(0))

    # Execute
    dropout.on_dropout(_job(client=2), now=10.0)

    # Assert
    assert dropout.filter([0, 1, 2, 3], 12.0) == [0, 1, 3]
    assert dropout.next_change(12.0) == 14.0
    assert dropout.filter([0, 1, 2, 3], 14.0) == [0, 1, 2, 3]
    assert dropout.next_change(14.0) is None


def test_check_in_adds_count_clients_every_interval_in_a_seeded_order():
    # Prepare
    check_in = CheckIn(interval=10.0, count=3, initial=2)
    check_in.setup(10, np.random.default_rng(5))
    order = list(np.random.default_rng(5).permutation(10))  # the joining order, drawn from the same stream

    # Execute / Assert
    idle = list(range(10))
    assert check_in.filter(idle, 0.0) == sorted(order[:2])
    assert check_in.filter(idle, 9.999) == sorted(order[:2])
    assert check_in.filter(idle, 10.0) == sorted(order[:5])
    assert check_in.filter(idle, 25.0) == sorted(order[:8])
    assert check_in.filter(idle, 30.0) == idle
    assert [check_in.next_change(t) for t in (0.0, 10.0, 25.0, 30.0)] == [10.0, 20.0, 30.0, None]


def test_windows_take_each_affected_client_away_for_duration_of_every_period():
    # Prepare
    windows = Windows(period=10.0, duration=4.0, fraction=1.0)
    windows.setup(3, np.random.default_rng(0))
    windows._phase = np.array([0.0, 5.0, np.nan])  # client 2 has no window

    # Execute / Assert: client 0 is away on [0, 4) + 10k, client 1 on [5, 9) + 10k
    assert windows.filter([0, 1, 2], 1.0) == [1, 2]
    assert windows.filter([0, 1, 2], 4.0) == [0, 1, 2]
    assert windows.filter([0, 1, 2], 6.0) == [0, 2]
    assert windows.filter([0, 1, 2], 11.0) == [1, 2]
    assert windows.next_change(1.0) == pytest.approx(4.0)
    assert windows.next_change(6.0) == pytest.approx(9.0)
    assert windows.next_change(4.5) is None


def test_availability_values_are_checked():
    with pytest.raises(ValueError, match="p must be in"):
        Dropout(p=2)
    with pytest.raises(InvalidValue, match="count must be an integer >= 1, got 0"):
        CheckIn(count=0)
    with pytest.raises(InvalidValue, match=r"duration must be in \[0, period=10.0\), got 10"):
        Windows(period=10.0, duration=10)
    assert Availability().filter([3, 4], 0.0) == [3, 4]


# -- in a run -------------------------------------------------------------------------


def test_retry_runs_a_failed_job_again_up_to_max_retries_then_skips_it(make_cfg, tmp_path):
    # Prepare
    faults = Faults(error_rate=0.4)

    # Execute
    summary = run(make_cfg("faults=random", "faults.error_rate=0.4", "faults.nan_rate=0", "server.on_client_error=retry", "server.max_retries=2"))

    # Assert: each job's rows follow the fault draws of its attempts exactly
    rows = _rows(tmp_path / "run")
    by_job: dict[int, list[dict[str, str]]] = {}
    for row in rows:
        by_job.setdefault(int(row["job_id"]), []).append(row)
    expected_failed = expected_retries = 0
    for job_id, job_rows in by_job.items():
        job = Job(job_id=job_id, client_id=int(job_rows[0]["client_id"]), base_version=int(job_rows[0]["base_version"]),
                  seed=_seed(summary, job_id), dispatch_time=0.0, arrival_time=0.0)  # fmt: skip
        statuses = [r["status"] for r in job_rows]
        attempts = [int(r["attempt"]) for r in job_rows]
        assert attempts == list(range(len(job_rows)))
        for attempt, status in zip(attempts, statuses):
            fails = faults.draw(Job(**{**vars(job), "attempt": attempt})) == "error"
            if attempt < 2:
                assert status == ("retried" if fails else "accepted")
            else:
                assert status == ("failed" if fails else "accepted")
        expected_retries += statuses.count("retried")
        expected_failed += statuses.count("failed")
    assert summary["retries"] == expected_retries > 0
    assert summary["failed"] == expected_failed
    assert summary["accounting"]["balanced"]


def _seed(summary: dict, job_id: int) -> int:
    from lightning_asyncfl.seeding import job_seed

    return job_seed(summary["seed"], job_id)


def test_skip_counts_failures_and_nan_updates_and_the_model_stays_finite(make_cfg, tmp_path):
    # Execute
    summary = run(make_cfg("faults=random", "faults.error_rate=0.2", "faults.nan_rate=0.2"))

    # Assert
    rows = _rows(tmp_path / "run")
    assert summary["failed"] == sum(r["status"] == "failed" for r in rows) > 0
    assert summary["rejected"]["non_finite"] == sum(r["status"] == "non_finite" for r in rows) > 0
    assert all("InjectedFault: injected fault" in r["detail"] for r in rows if r["status"] == "failed")
    weights = torch.load(tmp_path / "run" / "final_model.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert summary["accounting"]["balanced"]


def test_dropped_jobs_never_arrive_their_clients_come_back_and_the_books_balance(make_cfg, tmp_path):
    # Execute
    summary = run(make_cfg("availability=dropout", "availability.p=0.3", "availability.offline=0.5"))

    # Assert: exactly the jobs whose draw says so dropped out
    rows = _rows(tmp_path / "run")
    dropout = Dropout(p=0.3)
    for row in rows:
        job = Job(job_id=int(row["job_id"]), client_id=int(row["client_id"]), base_version=int(row["base_version"]),
                  seed=_seed(summary, int(row["job_id"])), dispatch_time=float(row["dispatch_time"]),
                  arrival_time=float(row["arrival_time"]))  # fmt: skip
        assert (row["status"] == "dropped") == (dropout.dropout_time(job) is not None)
    dropped = [r for r in rows if r["status"] == "dropped"]
    assert summary["dropped"] == len(dropped) > 0
    assert summary["client_updates"] == len(rows) - len(dropped)
    accounting = summary["accounting"]
    assert accounting["balanced"] and accounting["dropped"] == summary["dropped"]


def test_check_in_dispatches_no_client_before_it_joined(make_cfg, tmp_path):
    # Execute
    summary = run(make_cfg("availability=check_in", "availability.interval=0.5", "availability.count=2", "availability.initial=4"))

    # Assert: at every dispatch time the distinct clients seen so far fit the joined count
    rows = sorted(_rows(tmp_path / "run"), key=lambda r: float(r["dispatch_time"]))
    seen: set[int] = set()
    for row in rows:
        seen.add(int(row["client_id"]))
        joined = min(20, 4 + 2 * math.floor(float(row["dispatch_time"]) / 0.5 + 1e-9))
        assert len(seen) <= joined
    assert summary["status"] == "completed" and summary["steps"] == 12


def test_windows_dispatch_no_client_while_it_is_away(make_cfg, tmp_path):
    # Prepare
    summary = run(make_cfg("availability=windows", "availability.period=2.0", "availability.duration=1.0"))
    windows = Windows(period=2.0, duration=1.0)
    from lightning_asyncfl import seeding

    windows.setup(summary["num_clients"], seeding.stream(summary["seed"], seeding.AVAILABILITY))

    # Assert
    rows = _rows(tmp_path / "run")
    assert rows
    for row in rows:
        client = int(row["client_id"])
        assert windows.filter([client], float(row["dispatch_time"])) == [client]


def test_raise_stops_at_the_first_failure(make_cfg):
    with pytest.raises(InjectedFault):
        run(make_cfg("faults=random", "faults.error_rate=0.5", "faults.nan_rate=0", "server.on_client_error=raise"))


def test_every_new_setting_is_checked_and_all_problems_are_reported_at_once(make_cfg):
    # Execute
    with pytest.raises(ConfigError) as error:
        run(make_cfg("server.on_client_error=ignore", "server.max_retries=-1", "availability=dropout", "availability.p=1.5",
                     "faults=random", "faults.error_rate=2", "checkpoint.keep_last=0"))  # fmt: skip

    # Assert
    text = str(error.value)
    for line in (
        "server.on_client_error must be one of: skip, retry, raise, got 'ignore'",
        "server.max_retries must be an integer >= 0, got -1",
        "availability.p must be in [0, 1], got 1.5",
        "faults.error_rate must be in [0, 1], got 2",
        "checkpoint.keep_last must be an integer >= 1, got 0",
    ):
        assert line in text


class _Float64(Faults):
    """Sends its weights as float64 (a client on another dtype)."""

    def after_training(self, job: Job, result: JobResult) -> JobResult:
        return JobResult(result.state.with_flat(result.state.flat.double()), result.metrics, result.client_state)


def test_an_update_of_another_dtype_is_rejected_with_the_reason(make_cfg, tmp_path):
    # Execute
    summary = run(make_cfg("faults._target_=tests.test_reliability._Float64", "server.max_updates=20"))

    # Assert: nothing is applied, every update is refused as dtype
    rows = _rows(tmp_path / "run")
    assert summary["applied"] == 0 and summary["rejected"] == {"dtype": len(rows)}
    assert rows[0]["detail"] == "the update's weights are torch.float64, the global model's torch.float32"


def test_with_10pc_failing_10pc_dropping_and_5pc_nan_the_default_experiment_stays_close_to_the_clean_run(make_cfg):
    # Execute: the default experiment (FedAsync on digits, 1000 versions), clean and faulty
    clean = run(make_cfg(small=False, name="clean"))
    faulty = run(make_cfg("faults=random", "faults.error_rate=0.1", "faults.nan_rate=0.05", "availability=dropout",
                          "availability.p=0.1", small=False, name="faulty"))  # fmt: skip

    # Assert
    assert faulty["status"] == "completed" and faulty["steps"] == clean["steps"] == 1000
    assert faulty["failed"] > 0 and faulty["dropped"] > 0 and faulty["rejected"]["non_finite"] > 0
    assert faulty["accounting"]["balanced"]
    assert abs(faulty["final_accuracy"] - clean["final_accuracy"]) <= 0.03


# -- every run ends: the no-progress guard --------------------------------------------------------

GUARD = ["server.max_arrivals_without_progress=25"]


class _AlwaysRaises(MLP):
    """A LightningModule whose training step always raises."""

    def training_step(self, batch, batch_idx):
        raise ValueError("the loss is undefined for this batch")


class _Huge(Attack):
    """Sends finite values near float32's largest (3e38): accepted, but no aggregate of them is finite."""

    def _corrupt(self, job, base, trained):
        return torch.full_like(trained, 3e38)


def _failed_run(tmp_path: Path, name: str = "run") -> dict:
    """The files of a run that stopped as failed: its summary, with its checkpoint checked."""
    out = tmp_path / name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["accounting"]["balanced"]
    state = load_checkpoint(find_checkpoint(out))
    assert state["version"] == summary["steps"]
    assert not (out / "final_model.pt").exists()
    return summary


@pytest.mark.parametrize(
    ("overrides", "last_error"),
    [
        (["faults=random", "faults.error_rate=1.0", "faults.nan_rate=0"], "InjectedFault: injected fault"),
        (["faults=random", "faults.error_rate=0", "faults.nan_rate=1.0"], "non_finite: the update holds NaN or infinite values"),
        (["availability=dropout", "availability.p=1"], "dropped out"),
        (["attack=scale", "attack.fraction=0.05", "attack.factor=1e20"], "non_finite"),
        (["server=fedbuff", "attack._target_=tests.test_reliability._Huge", "attack.fraction=0.05"], "non_finite"),
    ],
    ids=["errors", "nan", "dropout", "scale-1e20", "finite-3e38"],
)
def test_a_run_that_makes_no_progress_stops_as_failed_with_the_last_error(make_cfg, tmp_path, overrides, last_error):
    # Execute
    with pytest.raises(RunFailed) as error:
        run(make_cfg(*GUARD, "server.max_steps=200", *overrides))

    # Assert: why, quoting the last error; a checkpoint and a summary that says failed
    futile = re.match(r"no progress: (\d+) arrivals in a row brought no new global version", str(error.value))
    assert futile and int(futile.group(1)) >= 25 and last_error in str(error.value)  # an aggregate that was not installed counts all its updates
    summary = _failed_run(tmp_path)
    assert summary["stop_reason"] == str(error.value)


def test_a_training_step_that_always_raises_is_refused_before_training(make_cfg, tmp_path):
    # Execute: the trial job before the run raises (it used to spin until killed)
    with pytest.raises(ConfigError) as error:
        run(make_cfg(*GUARD, "model._target_=tests.test_reliability._AlwaysRaises", "system.flops_per_example=1e6"))

    # Assert: the module, what it raised, and nothing trained
    assert "_AlwaysRaises" in str(error.value) and "ValueError: the loss is undefined for this batch" in str(error.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_guard_on_virtual_time_stops_a_run_that_makes_no_progress_for_that_long(make_cfg, tmp_path):
    with pytest.raises(RunFailed, match=r"no progress: no new global version for 5(\.0)? virtual seconds"):
        run(make_cfg("faults=random", "faults.error_rate=1.0", "faults.nan_rate=0", "system=none", "delay=constant", "delay.value=1.0",
                     "server.max_time_without_progress=5"))  # 10 jobs of 1 s in flight: 50 arrivals in 5 s, far below the arrivals' limit
    assert _failed_run(tmp_path)["virtual_time"] < 10


@pytest.mark.slow  # about a minute: 1000 arrivals through the command line
def test_the_guard_has_a_default_and_the_cli_exits_non_zero_with_the_reason(tmp_path):
    # Execute: every client drops out of every job; only the default guard stops it
    result = subprocess.run(
        [sys.executable, "-m", "lightning_asyncfl", "availability=dropout", "availability.p=1", "progress=false", f"output_dir={tmp_path / 'run'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    # Assert
    assert result.returncode == 1, result.stderr[-3000:]
    assert "error: no progress: 1000 arrivals in a row" in result.stderr and "Traceback" not in result.stderr
    assert _failed_run(tmp_path)["dropped"] == 1000


def test_guard_settings_are_checked(make_cfg):
    with pytest.raises(ConfigError) as error:
        run(make_cfg("server.max_arrivals_without_progress=0", "server.max_time_without_progress=-1"))
    assert "server.max_arrivals_without_progress must be null or an integer >= 1, got 0" in str(error.value)
    assert "server.max_time_without_progress must be null or > 0, got -1" in str(error.value)


# -- synchronous servers: an empty round is followed by a new round ----------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        ["server=fedavg", "server.scheduler.clients_per_round=2", "availability=dropout", "availability.p=0.5"],
        ["server=scaffold", "server.scheduler.clients_per_round=2", "availability=dropout", "availability.p=0.5"],
        ["server=fedavg", "server.scheduler.clients_per_round=2", "faults=random", "faults.error_rate=0.5", "faults.nan_rate=0.3"],
        ["server=fedat", "server.aggregator.clients_per_round=1", "availability=dropout", "availability.p=0.5"],
    ],
    ids=["fedavg-dropout", "scaffold-dropout", "fedavg-faults", "fedat-dropout"],
)
def test_a_synchronous_round_whose_clients_all_fail_or_drop_is_followed_by_a_new_round(make_cfg, tmp_path, overrides):
    # Execute
    summary = run(make_cfg(*overrides))

    # Assert: the run reaches its budget; some rounds came back empty on the way
    assert summary["status"] == "completed" and summary["stop_reason"] == "max_steps" and summary["steps"] == 12
    assert summary["accounting"]["balanced"]
    assert summary["dropped"] + summary["failed"] + summary["rejected_total"] > 0


def test_a_synchronous_run_whose_rounds_always_come_back_empty_fails(make_cfg, tmp_path):
    with pytest.raises(RunFailed, match="no progress"):
        run(make_cfg(*GUARD, "server=fedavg", "server.scheduler.clients_per_round=2", "availability=dropout", "availability.p=1"))
    assert _failed_run(tmp_path)["dropped"] == 25


class _Once(Scheduler):
    """Dispatches one client at the start, then never again."""

    def _select(self, now, idle, in_flight, version, rng):
        return [idle[0]] if version == 0 and not in_flight and now == 0 else []


def test_a_run_that_stops_before_its_budget_without_a_stop_rule_is_not_completed(make_cfg, tmp_path):
    with pytest.raises(RunFailed, match="nothing in flight, the scheduler dispatched nothing"):
        run(make_cfg("server.scheduler._target_=tests.test_reliability._Once", "~server.scheduler.concurrency"))
    assert _failed_run(tmp_path)["steps"] == 1


# -- the full shape of an update is checked -----------------------------------------------------


class _Short(Faults):
    """Every third job sends a flat vector one value short, with the right layout."""

    def after_training(self, job: Job, result: JobResult) -> JobResult:
        if job.job_id % 3:
            return result
        state = result.state
        return JobResult(ModelState(state.flat[:-1].clone(), state.layout, state.extras, state.side), result.metrics, result.client_state)


def test_an_update_with_the_right_layout_but_a_shorter_vector_is_rejected_as_shape(make_cfg, tmp_path):
    # Execute
    summary = run(make_cfg("faults._target_=tests.test_reliability._Short"))

    # Assert
    rows = _rows(tmp_path / "run")
    shape = [r for r in rows if r["status"] == "shape"]
    assert summary["status"] == "completed" and summary["rejected"]["shape"] == len(shape) > 0
    assert all(int(r["job_id"]) % 3 == 0 for r in shape)
    size = int(shape[0]["detail"].split()[-1])
    assert shape[0]["detail"] == f"the update's flat vector has {size - 1} values, the global model's {size}"
    assert summary["accounting"]["balanced"] and (tmp_path / "run" / "final_model.pt").is_file()
