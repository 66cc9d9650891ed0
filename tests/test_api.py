"""The notebook API: ``lightning_asyncfl.experiment(overrides)``, and the metric a sweep optimises."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

import lightning_asyncfl
from lightning_asyncfl.api import METRICS, check_optimized_metric, objective
from lightning_asyncfl.errors import ConfigError
from lightning_asyncfl.run import compose, resume_config, run
from tests.conftest import SMALL

#: summary.json values that are wall-clock measurements or name the run's own directory
NOT_COMPARED = ("wall_time", "executor_start_time", "output_dir")


def test_experiment_from_overrides_equals_run_of_the_composed_config(tmp_path):
    # Prepare
    overrides = ["server=fedbuff", "seed=3", *SMALL]

    # Execute
    summary = lightning_asyncfl.experiment([*overrides, f"output_dir={tmp_path / 'api'}"])
    reference = run(compose([*overrides, f"output_dir={tmp_path / 'run'}"]))

    # Assert
    assert summary["output_dir"] == str((tmp_path / "api").resolve())
    assert json.loads((tmp_path / "api" / "summary.json").read_text()) == summary
    assert summary["steps"] == 12 and summary["seed"] == 3
    assert {k: v for k, v in summary.items() if k not in NOT_COMPARED} == {k: v for k, v in reference.items() if k not in NOT_COMPARED}


def test_metrics_are_exactly_the_numeric_keys_of_a_runs_summary(tmp_path):
    # Execute
    summary = lightning_asyncfl.experiment([*SMALL, f"output_dir={tmp_path}"])

    # Assert: a new summary key with a number must be added to METRICS (and the docs)
    numeric = {k for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert set(METRICS) == numeric
    assert len(METRICS) == len(set(METRICS))


@pytest.mark.parametrize(("metric", "key"), [("final_accuracy", "final_accuracy"), ("final_loss", "final_loss"), ("virtual_time", "virtual_time"), ("steps", "steps")])
def test_objective_is_the_summary_value_named_by_optimized_metric(metric, key):
    # Prepare
    cfg = compose([f"optimized_metric={metric}"])
    summary = {"final_accuracy": 0.75, "final_loss": 0.5, "virtual_time": 12.25, "steps": 12}

    # Execute
    value = objective(cfg, summary)

    # Assert
    assert value == summary[key] and type(value) is float


def test_default_optimized_metric_is_the_validation_accuracy_and_none_stays_none():
    cfg = compose()

    assert cfg.optimized_metric == "final_val_accuracy"  # a sweep selects on validation, never on test
    assert objective(cfg, {"final_val_accuracy": None}) is None


def test_unknown_optimized_metric_names_the_key_the_value_and_every_metric():
    # Prepare
    cfg = compose(["optimized_metric=accuracy"])

    # Execute
    with pytest.raises(ConfigError) as info:
        check_optimized_metric(cfg)

    # Assert
    assert info.value.problems == [f"optimized_metric must be one of: {', '.join(METRICS)}, got 'accuracy'"]


def test_experiment_rejects_a_single_string_of_overrides():
    with pytest.raises(TypeError, match=r"overrides must be a list of strings, got the string 'seed=1'; write \['seed=1'\]"):
        lightning_asyncfl.experiment("seed=1")


def test_experiment_reports_a_bad_config_before_training(tmp_path):
    with pytest.raises(ConfigError) as info:
        lightning_asyncfl.experiment(["server.aggregator.alpha=2", f"output_dir={tmp_path / 'bad'}"])

    assert info.value.problems == ["server.aggregator.alpha must be a number in (0, 1], got 2"]
    assert not (tmp_path / "bad" / "summary.json").exists()


def test_a_resumed_run_may_report_another_optimized_metric(tmp_path):
    # Prepare: the config a checkpoint saved, and a resume that asks for another metric
    saved = OmegaConf.to_container(compose([*SMALL, f"output_dir={tmp_path}"]), resolve=True)
    saved.pop("hydra", None)
    cfg = compose([*SMALL, f"output_dir={tmp_path}", "resume=auto", "optimized_metric=best_accuracy"])

    # Execute
    merged = resume_config(cfg, saved)

    # Assert: what the entry point reports is not what the run computes, so it may change
    assert merged.server == saved["server"] and merged.seed == saved["seed"]
