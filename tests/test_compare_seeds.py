"""compare over seeds: settings that differ only in ``seed`` summarised as mean ± 95% CI (Student t), bands, heatmaps."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import lightning_asyncfl.compare.plots as compare_plots  # the pictures live in compare.plots
from lightning_asyncfl.compare import (
    Run,
    band,
    compare_runs,
    identical_curves,
    load_runs,
    mean_ci,
    plot_comparison,
    plot_heatmap,
    plot_seed_bands,
    run_labels,
    seed_groups,
    short_labels,
)


def direct_ci(values: list[float]) -> tuple[float, float]:
    x = np.asarray(values, dtype=np.float64)
    return float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A real 3-seed x 2-algorithm sweep through the command line."""
    root = tmp_path_factory.mktemp("seeds")
    result = subprocess.run(
        [sys.executable, "-m", "lightning_asyncfl", "-m", "seed=0,1,2", "server=fedasync,fedbuff", "server.max_steps=4",
         "server.eval_every=2", "progress=false", f"hydra.sweep.dir={root / 'sweep'}"],
        cwd=root, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "sweep"


def test_compare_prints_mean_and_ci_over_seeds_equal_to_scipy(sweep):
    # Execute
    result = subprocess.run([sys.executable, "-m", "lightning_asyncfl.compare", str(sweep)], capture_output=True, text=True, timeout=300)

    # Assert: one row per algorithm, each the mean ± t_{0.975,2} s / sqrt(3) of its three seeds' summaries
    assert result.returncode == 0, result.stderr[-3000:]
    finals: dict[str, list[float]] = {}
    bests: dict[str, list[float]] = {}
    for job in sorted(p for p in sweep.iterdir() if p.name.isdigit()):
        server = next(o.split("=")[1] for o in (job / ".hydra" / "overrides.yaml").read_text().split() if o.startswith("server="))
        summary = json.loads((job / "summary.json").read_text())
        finals.setdefault(server, []).append(summary["final_accuracy"])
        bests.setdefault(server, []).append(summary["best_accuracy"])
    assert sorted(finals) == ["fedasync", "fedbuff"] and all(len(v) == 3 for v in finals.values())
    with (sweep / "seeds.csv").open(newline="") as file:
        rows = {row["label"]: row for row in csv.DictReader(file)}
    assert sorted(rows) == ["server=fedasync", "server=fedbuff"]
    for server, values in finals.items():
        mean, half = direct_ci(values)
        best_mean, best_half = direct_ci(bests[server])
        row = rows[f"server={server}"]
        assert row["seeds"] == "3"
        assert float(row["final_accuracy"]) == pytest.approx(mean, rel=1e-12)
        assert float(row["final_accuracy_ci"]) == pytest.approx(half, rel=1e-12)
        assert float(row["best_accuracy_ci"]) == pytest.approx(best_half, rel=1e-12)
        assert f"| server={server} | 3 | {mean:.4f} ± {half:.4f} | {best_mean:.4f} ± {best_half:.4f} |" in result.stdout
    assert "Mean ± 95% confidence interval over seeds (Student t)" in result.stdout
    assert (sweep / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert "Wrote compare.png, compare.md, compare.csv and seeds.csv in" in result.stdout


def test_the_plot_draws_each_setting_as_its_mean_with_a_confidence_band(sweep, tmp_path, monkeypatch):
    # Prepare: keep the figure instead of closing it
    figures = []
    monkeypatch.setattr(compare_plots, "_save_figure", lambda fig, path: figures.append(fig) or Path(path))
    runs = load_runs([sweep])
    groups = seed_groups(runs)

    # Execute
    plot_seed_bands(groups, "test_accuracy", tmp_path / "compare.png")

    # Assert: per panel, one band (a filled polygon) per algorithm, its edges mean ± half-width of the seeds' curves
    (fig,) = figures
    for ax, x_key in zip(fig.axes[:2], ("virtual_time", "client_updates")):
        bands = ax.collections
        assert len(bands) == 2 and [line.get_label().split(" (n=")[0] for line in ax.lines] == ["server=fedasync", "server=fedbuff"]
        for group, polygon, line in zip(groups, bands, ax.lines):
            curves = [([row[x_key] for row in run.metrics], [row["test_accuracy"] for row in run.metrics]) for run in group.runs]
            x, mean, half = band(curves)
            assert np.array_equal(line.get_xdata(), x) and np.allclose(line.get_ydata(), mean)
            i = len(x) // 2  # at a grid point: the seeds' interpolated values give the interval directly
            at = [np.interp(x[i], cx, cy) for cx, cy in curves]
            m, h = direct_ci(at)
            vertices = polygon.get_paths()[0].vertices
            ys = vertices[np.isclose(vertices[:, 0], x[i]), 1]
            assert min(ys) == pytest.approx(m - h) and max(ys) == pytest.approx(m + h)


def test_mean_ci_is_student_t_and_degrades_gracefully():
    assert mean_ci([0.5, 0.7, 0.6, 0.9]) == pytest.approx(direct_ci([0.5, 0.7, 0.6, 0.9]))
    assert mean_ci([0.4]) == (0.4, None)
    assert mean_ci([None, None]) == (None, None)
    assert mean_ci([0.4, None, 0.6]) == pytest.approx(direct_ci([0.4, 0.6]))  # a seed that never reached the target


def _run(i: int, overrides: list[str], accuracy: list[float]) -> Run:
    metrics = [{"version": v, "client_updates": 2 * v, "virtual_time": 1.5 * v, "wall_time": 0.1, "test_accuracy": a} for v, a in enumerate(accuracy)]
    return Run(path=Path(f"/results/sweep/{i}"), metrics=metrics, overrides=overrides)


def test_a_two_key_grid_gets_a_heatmap_of_the_mean_final_value(tmp_path, monkeypatch):
    # Prepare: alpha x a grid, two seeds per cell, final accuracy = alpha + a/10 + seed/100
    figures = []
    monkeypatch.setattr(compare_plots, "_save_figure", lambda fig, path: figures.append(fig) or Path(path))
    runs, i = [], 0
    for alpha in ("0.3", "0.9"):
        for a in ("0.5", "1", "2"):
            for seed in (0, 1):
                final = float(alpha) + float(a) / 10 + seed / 100
                runs.append(_run(i, [f"server.aggregator.alpha={alpha}", f"server.aggregator.a={a}", f"seed={seed}"], [0.1, final]))
                i += 1
    groups = seed_groups(runs)
    comparison = compare_runs(runs, run_labels(runs))

    # Execute
    path = plot_heatmap(groups, comparison, tmp_path / "heatmap.png")

    # Assert
    assert path == tmp_path / "heatmap.png"
    image = figures[0].axes[0].images[0].get_array()
    expected = [[float(alpha) + float(a) / 10 + 0.005 for a in ("0.5", "1", "2")] for alpha in ("0.3", "0.9")]
    assert np.allclose(image, expected)
    assert plot_heatmap(groups[:5], comparison, tmp_path / "h.png") is None  # a grid with a hole: no heatmap
    assert plot_heatmap(seed_groups(runs[:4]), compare_runs(runs[:4], run_labels(runs[:4])), tmp_path / "h.png") is None  # one row


def test_plot_labels_drop_the_common_prefix_and_identical_curves_are_marked(tmp_path, monkeypatch):
    # Prepare: b does nothing, so runs 0 and 1 are identical
    figures = []
    monkeypatch.setattr(compare_plots, "_save_figure", lambda fig, path: figures.append(fig) or Path(path))
    runs = [
        _run(0, ["server.aggregator.b=1"], [0.1, 0.5, 0.7]),
        _run(1, ["server.aggregator.b=2"], [0.1, 0.5, 0.7]),
        _run(2, ["server.aggregator.b=3"], [0.1, 0.4, 0.6]),
    ]
    labels = run_labels(runs)

    # Execute
    plot_comparison(runs, labels, "test_accuracy", tmp_path / "compare.png")

    # Assert
    assert short_labels(labels) == (["b=1", "b=2", "b=3"], "server.aggregator.")
    assert short_labels(["server.aggregator.alpha=0.3 server=fedbuff"]) == (["server.aggregator.alpha=0.3 server=fedbuff"], "")
    assert identical_curves(runs, labels, "test_accuracy") == [("server.aggregator.b=2", "server.aggregator.b=1")]
    ax = figures[0].axes[1]
    assert [line.get_label() for line in ax.lines] == ["b=1", "b=2 (= b=1)", "b=3"]
    assert ax.lines[1].get_linestyle() == "--" and ax.lines[0].get_linestyle() == "-"
    assert ax.get_legend().get_title().get_text() == "server.aggregator.…"
