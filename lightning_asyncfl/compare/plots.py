"""The pictures of ``compare``: curves per run, mean curves with confidence bands per setting, heatmaps of 2-D grids."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from lightning_asyncfl.compare.runs import CONFIDENCE, Comparison, Run, _series  # noqa: E402
from lightning_asyncfl.compare.seeds import Group, format_ci, mean_ci  # noqa: E402
__all__ = ["band", "identical_curves", "plot_comparison", "plot_heatmap", "plot_seed_bands", "short_labels"]


def plot_comparison(runs: Sequence[Run], labels: Sequence[str], metric: str, path: str | Path, target: float | None = None) -> Path:
    """Write ``compare.png``: ``metric`` against virtual time and against client updates, one curve per run.

    Legend labels drop the dotted prefix their keys share (shown as the legend's title);
    a curve identical to an earlier one is drawn dashed with hollow markers over it and
    labelled ``(= that run)``.
    """
    short, prefix = short_labels(labels)
    same = dict(identical_curves(runs, short, metric))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for run, label, (style, color) in zip(runs, short, _styles(len(runs))):
        values = _series(run, metric)
        repeat = label in same  # drawn dashed and thicker over the curve it repeats, so both show
        for ax, key in zip(axes, ("virtual_time", "client_updates")):
            ax.plot([row[key] for row, _ in values], [v for _, v in values], linestyle="--" if repeat else style, color=color,
                    marker="o" if repeat else ".", markerfacecolor="none" if repeat else color, linewidth=2.2 if repeat else 1.2,
                    label=f"{label} (= {same[label]})" if repeat else label)  # fmt: skip
    _finish_axes(fig, axes, metric, target, f"{len(runs)} runs", prefix)
    return _save_figure(fig, path)



def short_labels(labels: Sequence[str]) -> tuple[list[str], str]:
    """Labels without the dotted prefix that all their keys share (``server.aggregator.alpha=0.3`` -> ``alpha=0.3``), and that prefix."""
    tokens = [label.split(" ") for label in labels]
    keys = [t.partition("=")[0] for ts in tokens for t in ts if "=" in t]
    if not keys or len(keys) != sum(len(ts) for ts in tokens):
        return list(labels), ""
    parts = [k.split(".")[:-1] for k in keys]
    common: list[str] = []
    for level in zip(*parts):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    prefix = ".".join(common) + "." if common else ""
    return [" ".join(t.removeprefix(prefix) for t in ts) for ts in tokens], prefix


def identical_curves(runs: Sequence[Run], labels: Sequence[str], metric: str) -> list[tuple[str, str]]:
    """``(label, label of the first run with the same curve)`` for every run whose ``metric`` curve repeats an earlier one exactly."""
    seen: dict[tuple, str] = {}
    pairs = []
    for run, label in zip(runs, labels):
        key = tuple((row["virtual_time"], row["client_updates"], value) for row, value in _series(run, metric))
        if not key:
            continue
        if key in seen:
            pairs.append((label, seen[key]))
        else:
            seen[key] = label
    return pairs


def band(curves: Sequence[tuple[Sequence[float], Sequence[float]]], confidence: float = CONFIDENCE, points: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, mean, half-width)`` of several ``(x, y)`` curves on a common grid.

    Each curve is linearly interpolated onto ``points`` values of x spanning the range
    that every curve covers; the half-width is the Student-t interval of the curves'
    values at each x (zero for one curve).
    """
    lo = max(min(x) for x, _ in curves)
    hi = min(max(x) for x, _ in curves)
    grid = np.linspace(lo, hi, points) if hi > lo else np.asarray([lo], dtype=np.float64)
    ys = np.stack([np.interp(grid, np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)) for x, y in curves])
    mean = ys.mean(axis=0)
    if len(curves) < 2:
        return grid, mean, np.zeros_like(mean)
    half = stats.t.ppf(0.5 + confidence / 2, len(curves) - 1) * ys.std(axis=0, ddof=1) / math.sqrt(len(curves))
    return grid, mean, half


def plot_seed_bands(groups: Sequence[Group], metric: str, path: str | Path, target: float | None = None) -> Path:
    """Write ``compare.png``: each setting's mean ``metric`` over its seeds with its 95% band, against virtual time and client updates."""
    labels, prefix = short_labels([g.label for g in groups])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    drawn: dict[tuple, str] = {}
    for group, label, (style, color) in zip(groups, labels, _styles(len(groups))):
        seeds = [[(row, v) for row, v in _series(run, metric)] for run in group.runs]
        seeds = [s for s in seeds if s]
        if not seeds:
            continue
        key = tuple(tuple((row["virtual_time"], row["client_updates"], v) for row, v in s) for s in seeds)
        same = drawn.get(key)
        drawn.setdefault(key, label)
        for ax, x_key in zip(axes, ("virtual_time", "client_updates")):
            x, mean, half = band([([row[x_key] for row, _ in s], [v for _, v in s]) for s in seeds])
            text = f"{label} (n={len(seeds)})" + (f" (= {same})" if same else "")
            ax.plot(x, mean, linestyle="--" if same else style, color=color, linewidth=2.2 if same else 1.4, label=text)
            ax.fill_between(x, mean - half, mean + half, color=color, alpha=0.2, linewidth=0)
    _finish_axes(fig, axes, metric, target, f"mean over seeds with {CONFIDENCE:.0%} confidence band (Student t)", prefix)
    return _save_figure(fig, path)


def plot_heatmap(groups: Sequence[Group], comparison: Comparison, path: str | Path) -> Path | None:
    """Write ``heatmap.png`` when the settings vary in exactly two keys and fill their grid; else None.

    Each cell: the mean final value over the setting's seeds (± the 95% half-width when
    there are several).
    """
    keys = list(groups[0].settings) if groups else []
    if len(keys) != 2 or any(list(g.settings) != keys for g in groups):
        return None
    rows_values = list(dict.fromkeys(g.settings[keys[0]] for g in groups))
    cols_values = list(dict.fromkeys(g.settings[keys[1]] for g in groups))
    if len(groups) != len(rows_values) * len(cols_values) or min(len(rows_values), len(cols_values)) < 2:
        return None
    by_path = {row["run_dir"]: row for row in comparison.rows}
    final = f"final_{comparison.metric.removeprefix('test_')}"
    grid = np.full((len(rows_values), len(cols_values)), np.nan)
    notes = np.full(grid.shape, "", dtype=object)
    for g in groups:
        i, j = rows_values.index(g.settings[keys[0]]), cols_values.index(g.settings[keys[1]])
        mean, half = mean_ci([by_path[str(run.path)][final] for run in g.runs])
        if mean is not None:
            grid[i, j], notes[i, j] = mean, format_ci(mean, half, 3).replace(" ± ", "\n± ")
    fig, ax = plt.subplots(figsize=(1.6 * len(cols_values) + 3, 1.0 * len(rows_values) + 2))
    image = ax.imshow(grid, cmap="viridis_r" if comparison.goal == "min" else "viridis", aspect="auto")
    for (i, j), note in np.ndenumerate(notes):
        ax.text(j, i, note, ha="center", va="center", color="white", fontsize="small")
    ax.set_xticks(range(len(cols_values)), cols_values)
    ax.set_yticks(range(len(rows_values)), rows_values)
    ax.set_xlabel(keys[1])
    ax.set_ylabel(keys[0])
    fig.colorbar(image, ax=ax, label=f"{final} (mean over seeds)")
    ax.set_title(f"{final}: {keys[0]} × {keys[1]}")
    return _save_figure(fig, path)


def _finish_axes(fig: Any, axes: Any, metric: str, target: float | None, title: str, prefix: str) -> None:
    for ax, x_label in zip(axes, ("virtual time (s)", "client updates")):
        if target is not None:
            ax.axhline(target, color="black", linestyle="--", linewidth=0.8, alpha=0.6)
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(metric.replace("_", " ") + ("" if target is None else f" (target {target:.4f}, dashed)"))
    axes[1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small", title=f"{prefix}…" if prefix else None)
    fig.suptitle(title)
    fig.tight_layout()


def _save_figure(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path



def _styles(count: int) -> list[tuple[str, Any]]:
    """(linestyle, colour) per curve: the ten tab10 colours, then again with the next line style."""
    colors = plt.get_cmap("tab10").colors
    return [(["-", "--", ":", "-."][(i // len(colors)) % 4], colors[i % len(colors)]) for i in range(count)]
