"""Sweeps through the command line: an Optuna search (hydra/sweeper=optuna) and parallel jobs (hydra/launcher=joblib).

Both plugins are the ``[optuna]`` and ``[joblib]`` extras, which ``make`` installs.
"""

from __future__ import annotations

import pytest

import json
import subprocess
import sys
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from lightning_asyncfl.run import compose, run
from tests.conftest import SMALL

#: summary.json values that are wall-clock measurements or name the run's own directory
NOT_COMPARED = ("wall_time", "executor_start_time", "output_dir")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lightning_asyncfl", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def _jobs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def _overrides(job: Path) -> dict[str, str]:
    """The ``key=value`` overrides Hydra gave a job (its ``.hydra/overrides.yaml``)."""
    return dict(line.split("=", 1) for line in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))


def test_optuna_search_writes_the_best_trial_of_the_fedasync_search_space(tmp_path):
    # Prepare
    sweep = tmp_path / "sweep"

    # Execute: 2 trials of hparams_search=fedasync_optuna, each a 12-version run
    result = _cli("-m", "hparams_search=fedasync_optuna", "hydra.sweeper.n_trials=2", *SMALL, f"hydra.sweep.dir={sweep}", cwd=tmp_path)

    # Assert
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = _jobs(sweep)
    assert [job.name for job in jobs] == ["0", "1"]
    trials = []
    for job in jobs:
        summary = json.loads((job / "summary.json").read_text())
        assert summary["steps"] == 12
        composed = OmegaConf.load(job / ".hydra" / "config.yaml")
        assert composed.server.aggregator._target_ == "lightning_asyncfl.aggregators.FedAsync"
        assert composed.server.aggregator.staleness == "hinge"
        given = _overrides(job)
        params = {key: composed.server.aggregator[key] for key in ("alpha", "a", "b")}
        assert {f"server.aggregator.{k}": v for k, v in params.items()} == {k: yaml.safe_load(v) for k, v in given.items() if k.startswith("server.aggregator.")}
        assert 0.1 <= params["alpha"] < 1.0 and 0.0 <= params["a"] < 10.0
        assert isinstance(params["b"], int) and 0 <= params["b"] <= 16
        assert composed.optimized_metric == "final_val_accuracy"  # tuned on the validation split, never on test
        trials.append((summary["final_val_accuracy"], params))
    assert trials[0][1] != trials[1][1], "the sampler must propose two different points"
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best_accuracy, best_params = max(trials, key=lambda trial: trial[0])  # the first of equal ones, as Optuna
    assert results["name"] == "optuna"
    assert results["best_value"] == best_accuracy
    assert results["best_params"] == {f"server.aggregator.{k}": v for k, v in best_params.items()}


@pytest.mark.slow  # 27 s: two processes starting torch; the launcher's wiring, not the library's maths
def test_joblib_launcher_runs_two_jobs_in_parallel_processes_with_the_in_process_results(tmp_path):
    # Prepare
    sweep = tmp_path / "sweep"

    # Execute
    result = _cli(
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "server.aggregator.alpha=0.3,0.9", *SMALL,
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip

    # Assert: joblib ran both jobs, and each gives the bytes of the same run in this process
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2," in result.stdout + result.stderr
    jobs = _jobs(sweep)
    assert [job.name for job in jobs] == ["0", "1"]
    summaries = {}
    for job in jobs:
        alpha = _overrides(job)["server.aggregator.alpha"]
        summary = json.loads((job / "summary.json").read_text())
        assert summary["output_dir"] == str(job.resolve())
        reference = run(compose([f"server.aggregator.alpha={alpha}", *SMALL, f"output_dir={tmp_path / 'reference' / alpha}"]))
        assert {k: v for k, v in summary.items() if k not in NOT_COMPARED} == {k: v for k, v in reference.items() if k not in NOT_COMPARED}
        summaries[alpha] = summary
    assert sorted(summaries) == ["0.3", "0.9"]
    assert summaries["0.3"]["steps"] == summaries["0.9"]["steps"] == 12
    assert summaries["0.3"]["final_accuracy"] != summaries["0.9"]["final_accuracy"]


def test_unknown_optimized_metric_exits_2_before_training_and_lists_the_metrics(tmp_path):
    # Execute
    result = _cli("optimized_metric=accuracy", f"output_dir={tmp_path / 'run'}", *SMALL, cwd=tmp_path)

    # Assert
    assert result.returncode == 2
    assert "optimized_metric must be one of: final_accuracy, best_accuracy, final_loss, steps," in result.stderr
    assert result.stderr.rstrip().endswith("got 'accuracy'")
    assert not (tmp_path / "run" / "summary.json").exists()


@pytest.mark.slow  # 30 s: a command-line multirun with worker processes
def test_a_multirun_forks_every_jobs_workers_from_the_zygote_its_first_job_started(tmp_path):
    # Prepare
    sweep = tmp_path / "sweep"

    # Execute: two jobs in one process, each with two worker processes
    result = _cli("-m", "executor=processes", "server.aggregator.alpha=0.3,0.9", *SMALL, f"hydra.sweep.dir={sweep}", cwd=tmp_path)

    # Assert: both jobs' workers came from the zygote, each job logs only to its own file, the bytes are the in-process run's
    assert result.returncode == 0, result.stderr[-3000:]
    for job in _jobs(sweep):
        log = (job / "lightning_asyncfl.log").read_text()
        assert log.count("start_method=auto (zygote)) started: 2 worker(s)") == 1, log
        alpha = _overrides(job)["server.aggregator.alpha"]
        summary = json.loads((job / "summary.json").read_text())
        reference = run(compose([f"server.aggregator.alpha={alpha}", *SMALL, f"output_dir={tmp_path / 'reference' / alpha}"]))
        assert {k: v for k, v in summary.items() if k not in NOT_COMPARED} == {k: v for k, v in reference.items() if k not in NOT_COMPARED}
