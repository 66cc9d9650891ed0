"""``python -m lightning_asyncfl.compare``: runs found, labelled by their differing overrides, tabled and drawn."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lightning_asyncfl.compare import (
    CompareError,
    Run,
    compare_runs,
    find_runs,
    load_run,
    load_runs,
    main,
    markdown,
    run_labels,
    write_csv,
)
from lightning_asyncfl.run import compose, run
from tests.conftest import SMALL

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def metrics(run_dir: Path) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in row.items()} for row in read_csv(run_dir / "metrics.csv")]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> Path:
    """Two tiny runs from Python (no ``.hydra/``), seeds 0 and 1, in ``<root>/a`` and ``<root>/b``."""
    root = tmp_path_factory.mktemp("runs")
    for name, seed in (("a", 0), ("b", 1)):
        run(compose([f"output_dir={root / name}", f"seed={seed}", *SMALL]))
    return root


@pytest.mark.slow  # 22 s: a whole sweep; compare's tables are tested on run directories written directly
def test_a_multirun_sweep_compared_from_the_command_line(tmp_path):
    # Prepare: a real 2 x 2 sweep through the CLI
    sweep = tmp_path / "sweep"
    swept = subprocess.run(
        [sys.executable, "-m", "lightning_asyncfl", "-m", "server.aggregator.alpha=0.3,0.9", "server.aggregator.a=0.5,1",
         "server.max_steps=4", "server.eval_every=2", "progress=false", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert swept.returncode == 0, swept.stderr[-3000:]

    # Execute
    result = subprocess.run([sys.executable, "-m", "lightning_asyncfl.compare", str(sweep)], cwd=tmp_path, capture_output=True, text=True, timeout=120)

    # Assert: written into the sweep directory (the one PATH given)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (sweep / "compare.png").read_bytes()[:8] == PNG_SIGNATURE
    rows = read_csv(sweep / "compare.csv")
    assert len(rows) == 4
    assert [Path(row["run_dir"]) for row in rows] == [(sweep / str(job)).resolve() for job in range(4)]
    labels = []
    for row in rows:
        run_dir = Path(row["run_dir"])
        overrides = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "overrides.yaml"))
        swept_values = [o for o in overrides if o.startswith(("server.aggregator.alpha=", "server.aggregator.a="))]
        assert row["label"] == " ".join(swept_values)
        assert "max_steps" not in row["label"] and "eval_every" not in row["label"] and "progress" not in row["label"]
        labels.append(row["label"])
        summary = json.loads((run_dir / "summary.json").read_text())
        accuracy = [r["test_accuracy"] for r in metrics(run_dir)]
        assert float(row["final_accuracy"]) == summary["final_accuracy"] == accuracy[-1]
        assert float(row["best_accuracy"]) == summary["best_accuracy"] == max(accuracy)
        assert float(row["wall_time"]) == summary["wall_time"]
        assert row["stop_reason"] == "max_steps"
    assert sorted(labels) == [
        "server.aggregator.alpha=0.3 server.aggregator.a=0.5", "server.aggregator.alpha=0.3 server.aggregator.a=1",
        "server.aggregator.alpha=0.9 server.aggregator.a=0.5", "server.aggregator.alpha=0.9 server.aggregator.a=1",
    ]  # fmt: skip
    report = (sweep / "compare.md").read_text()
    assert sum(line.startswith("| server.aggregator.alpha=") for line in report.splitlines()) == 4
    assert "| server.aggregator.alpha=0.3 server.aggregator.a=0.5 |" in result.stdout


def test_the_default_target_is_within_ten_percent_of_the_best_final_accuracy(two_runs):
    # Prepare
    runs = load_runs([two_runs])
    finals = [metrics(r.path)[-1]["test_accuracy"] for r in runs]

    # Execute
    comparison = compare_runs(runs, run_labels(runs))

    # Assert
    best = max(finals)
    assert comparison.target == best - 0.1 * best
    for run_, row in zip(runs, comparison.rows):
        first = next((r for r in metrics(run_.path) if r["test_accuracy"] >= comparison.target), None)
        assert row["time_to_target"] == (first["virtual_time"] if first else None)
        assert row["updates_to_target"] == (int(first["client_updates"]) if first else None)
    assert comparison.rows[finals.index(best)]["time_to_target"] is not None  # the best run reaches its own target


def test_runs_without_hydra_overrides_are_labelled_by_directory_and_compared_exactly(two_runs):
    # Prepare
    runs = load_runs([two_runs])
    rows_a = metrics(two_runs / "a")
    best_a = max(r["test_accuracy"] for r in rows_a)
    first = next(r for r in rows_a if r["test_accuracy"] == best_a)

    # Execute: target = run a's best accuracy, reached first where it peaks
    comparison = compare_runs(runs, run_labels(runs), target=best_a)

    # Assert
    assert [r.path for r in runs] == [(two_runs / "a").resolve(), (two_runs / "b").resolve()]
    assert [row["label"] for row in comparison.rows] == ["a", "b"]
    row_a = comparison.rows[0]
    summary_a = json.loads((two_runs / "a" / "summary.json").read_text())
    assert row_a["final_accuracy"] == summary_a["final_accuracy"]
    assert row_a["best_accuracy"] == summary_a["best_accuracy"] == best_a
    assert (row_a["time_to_target"], row_a["updates_to_target"]) == (first["virtual_time"], first["client_updates"])
    assert row_a["wall_time"] == summary_a["wall_time"]


def test_a_target_never_reached_is_an_empty_cell(two_runs, tmp_path):
    runs = load_runs([two_runs])

    comparison = compare_runs(runs, run_labels(runs), target=1.5)
    write_csv(comparison, tmp_path / "compare.csv")

    assert [(r["time_to_target"], r["updates_to_target"]) for r in read_csv(tmp_path / "compare.csv")] == [("", ""), ("", "")]
    assert markdown(comparison).count("not reached") == 4
    assert "target 1.5000 (given with --target)" in markdown(comparison)


def test_a_loss_is_lower_is_better(two_runs):
    runs = load_runs([two_runs])

    comparison = compare_runs(runs, run_labels(runs), metric="test_loss")

    assert comparison.goal == "min"
    assert comparison.columns[2:4] == ["final_loss", "best_loss"]
    for run_, row in zip(runs, comparison.rows):
        losses = [r["test_loss"] for r in metrics(run_.path)]
        assert row["final_loss"] == losses[-1] == json.loads((run_.path / "summary.json").read_text())["final_loss"]
        assert row["best_loss"] == min(losses)
    best = min(row["final_loss"] for row in comparison.rows)
    assert comparison.target == best + 0.1 * best


def test_several_paths_write_into_the_current_directory(two_runs, tmp_path, monkeypatch, capsys):
    # Prepare
    monkeypatch.chdir(tmp_path)

    # Execute
    code = main([str(two_runs / "b"), str(two_runs / "a"), "--target", "0.05"])

    # Assert: in the order given, each run once
    assert code == 0
    assert (tmp_path / "compare.png").read_bytes()[:8] == PNG_SIGNATURE
    rows = read_csv(tmp_path / "compare.csv")
    assert [row["label"] for row in rows] == ["b", "a"]
    assert "target 0.0500 (given with --target)" in (tmp_path / "compare.md").read_text()
    assert "Wrote compare.png, compare.md and compare.csv in" in capsys.readouterr().out


def test_labels_show_only_the_overrides_that_differ():
    # Prepare
    def runs(*overrides: list[str] | None) -> list[Run]:
        return [Run(path=Path(f"/results/sweep/{i}"), metrics=[], overrides=o) for i, o in enumerate(overrides)]

    # Execute / Assert
    assert run_labels(runs(["server=fedbuff", "seed=0", "output_dir=/x/0"], ["seed=1", "output_dir=/x/1"])) == [
        "server=fedbuff seed=0", "server=(default) seed=1",
    ]  # fmt: skip
    assert run_labels(runs(["seed=0", "progress=false"], ["seed=0"])) == ["0", "1"]  # nothing that matters differs
    assert run_labels(runs(["seed=0"], None)) == ["0", "1"]  # one run has no overrides
    assert run_labels(runs(["seed=0"], ["seed=1"], ["seed=1"])) == ["seed=0", "seed=1 [1]", "seed=1 [2]"]
    assert run_labels(runs(["a=1|2"])) == ["0"]  # a single run: its directory


def test_run_directories_are_found_below_a_path_in_natural_order(tmp_path):
    # Prepare: header-only metrics.csv files, as a run leaves before its first evaluation
    for job in ("10", "2", "1", "nested/3"):
        (tmp_path / job).mkdir(parents=True)
        (tmp_path / job / "metrics.csv").write_text("version,client_updates,virtual_time,wall_time,test_accuracy\n")
    (tmp_path / "no_run").mkdir()

    # Execute / Assert
    assert find_runs(tmp_path) == [tmp_path / "1", tmp_path / "2", tmp_path / "10", tmp_path / "nested" / "3"]
    assert find_runs(tmp_path / "2") == [tmp_path / "2"]
    unfinished = load_run(tmp_path / "2")
    assert unfinished.metrics == [] and unfinished.summary is None and unfinished.overrides is None
    row = compare_runs([unfinished], ["2"]).rows[0]
    assert (row["final_accuracy"], row["best_accuracy"], row["time_to_target"], row["wall_time"]) == (None, None, None, None)
    with pytest.raises(CompareError, match="no_run holds no runs"):
        find_runs(tmp_path / "no_run")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/missing"], "error: {tmp}/missing: no such file or directory"),
        (["{tmp}/empty"], "error: {tmp}/empty holds no runs: no metrics.csv in it or in any directory below it"),
        (["{runs}/a", "--metric", "test_f1"], "error: --metric test_f1 is not a column of {runs}/a/metrics.csv (its test_* columns: test_loss, test_accuracy)"),
        (["{runs}/a", "--target", "nan"], "error: --target must be a finite number, got nan"),
    ],
)  # fmt: skip
def test_bad_paths_and_options_exit_with_2_and_name_what_is_wrong(args, message, two_runs, tmp_path, capsys):
    # Prepare
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"

    # Execute
    code = main([a.format(tmp=tmp_path, runs=two_runs.resolve()) for a in args] + ["--out", str(out)])

    # Assert
    assert code == 2
    assert capsys.readouterr().err.strip() == message.format(tmp=tmp_path, runs=two_runs.resolve())
    assert not out.exists()
