"""``python -m lightning_asyncfl.compare PATH...``: finished runs side by side, in one table and one picture.

Each PATH is a run directory (it holds ``metrics.csv``) or any directory above run
directories, such as a Hydra multirun directory; every run below it is compared. Writes
into ``--out`` (default: the PATH when there is one, else the current directory):

- ``compare.png``: the metric against virtual time and against client updates, one curve
  per run, with the target as a dashed line;
- ``compare.csv`` and ``compare.md``: one row per run, see :data:`COLUMNS`;
- with runs that differ only in ``seed`` (``-m seed=0,1,2 server=fedasync,fedbuff``):
  ``seeds.csv`` and a second table in ``compare.md``, one row per setting with the mean
  ± 95% confidence interval (Student t) over its seeds of the final and best value and of
  the time and updates to the target (:func:`seed_groups`, :func:`summarize_groups`),
  and ``compare.png`` draws each setting's mean curve with its confidence band;
- with settings that form a full 2-D grid of two swept keys: ``heatmap.png``, the mean
  final value of each cell (:func:`plot_heatmap`).

Curves that are identical to an earlier one are drawn dashed on top of it and marked
``(= label)`` in the legend, and listed under the table: runs whose swept key did nothing.

Each run is labelled by the Hydra overrides (``.hydra/overrides.yaml``) that differ
between the runs, e.g. ``server.aggregator.alpha=0.3 server.aggregator.a=0.5``; by its
directory when they share every override or some run has none. The core is pure
functions (:func:`find_runs`, :func:`load_run`, :func:`run_labels`, :func:`compare_runs`,
:func:`plot_comparison`, :func:`write_csv`, :func:`write_markdown`); :func:`main` only
parses the command line. See ``docs/comparing.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402
import yaml  # noqa: E402

METRICS_FILE = "metrics.csv"
#: overrides that say where and how a run reported, not what it did: never part of a label
IGNORED_OVERRIDES = frozenset({"output_dir", "progress"})
#: the key a group of runs may differ in and still be one setting
SEED_KEY = "seed"
#: the confidence level of the intervals over seeds
CONFIDENCE = 0.95
#: the columns of ``compare.csv``; ``{name}`` is the metric without ``test_`` (``accuracy``)
COLUMNS = ["label", "run_dir", "final_{name}", "best_{name}", "time_to_target", "updates_to_target", "wall_time", "stop_reason"]


class CompareError(ValueError):
    """A path without runs, a run without the metric, or a bad option: ``main`` exits with code 2."""


@dataclass(frozen=True)
class Run:
    """One finished (or interrupted) run, as read from its directory.

    Attributes:
        path: the run directory, absolute.
        metrics: the rows of ``metrics.csv``; numbers as int or float, empty cells None.
        summary: ``summary.json``, or None when the run did not finish.
        overrides: ``.hydra/overrides.yaml`` (``key=value`` strings), or None when the
            run was not started from the command line.
    """

    path: Path
    metrics: list[dict[str, Any]]
    summary: dict[str, Any] | None = None
    overrides: list[str] | None = None


@dataclass(frozen=True)
class Comparison:
    """The table of :func:`compare_runs`: one row per run, keyed by :attr:`columns`."""

    metric: str
    goal: str
    target: float | None
    target_rule: str
    columns: list[str]
    rows: list[dict[str, Any]]


def find_runs(path: str | Path) -> list[Path]:
    """The run directories at or below ``path``, in natural order (``2`` before ``10``).

    Raises:
        CompareError: ``path`` does not exist, is a file, or holds no ``metrics.csv``.
    """
    path = Path(path)
    if not path.exists():
        raise CompareError(f"{path}: no such file or directory")
    if not path.is_dir():
        raise CompareError(f"{path} is a file; give a run directory or a directory above runs (e.g. a multirun directory)")
    if (path / METRICS_FILE).is_file():
        return [path]
    found = sorted({p.parent for p in path.rglob(METRICS_FILE)}, key=_natural_key)
    if not found:
        raise CompareError(f"{path} holds no runs: no {METRICS_FILE} in it or in any directory below it")
    return found


def load_run(path: str | Path) -> Run:
    """Read ``metrics.csv``, and ``summary.json`` and ``.hydra/overrides.yaml`` where they exist."""
    path = Path(path).resolve()
    try:
        with (path / METRICS_FILE).open(newline="") as file:
            metrics = [{key: _number(value) for key, value in row.items()} for row in csv.DictReader(file)]
    except (csv.Error, UnicodeDecodeError) as error:
        raise CompareError(f"{path / METRICS_FILE} is not a metrics table: {error}") from None
    summary_file, overrides_file = path / "summary.json", path / ".hydra" / "overrides.yaml"
    try:
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
    except (json.JSONDecodeError, RecursionError, UnicodeDecodeError) as error:
        raise CompareError(f"{summary_file} is not valid JSON: {type(error).__name__}: {error}") from None
    overrides = _read_overrides(overrides_file) if overrides_file.is_file() else None
    return Run(path=path, metrics=metrics, summary=summary, overrides=overrides)


def _read_overrides(path: Path) -> list[str]:
    """``.hydra/overrides.yaml``, read as plain YAML data (no tags, no objects): a list of strings."""
    try:
        items = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, RecursionError, UnicodeDecodeError) as error:
        why = "nested too deeply" if isinstance(error, RecursionError) else str(error).splitlines()[0]
        raise CompareError(f"{path} is not a list of overrides (key=value strings): {why}") from None
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise CompareError(f"{path} is not a list of overrides (key=value strings)")
    return items


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Every run at or below each path, each once, in the order found."""
    found = [run for path in paths for run in find_runs(path)]
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return [load_run(p) for p in unique]


def run_labels(runs: Sequence[Run]) -> list[str]:
    """A label per run: the overrides that differ between the runs, else the run's directory.

    Keys in :data:`IGNORED_OVERRIDES` never count. A key that one run overrides and
    another does not shows as ``key=(default)`` in the other. Runs whose labels would be
    equal get their directory appended in brackets.
    """
    names = _short_names([run.path for run in runs])
    labels = [""] * len(runs)
    if len(runs) > 1 and all(run.overrides is not None for run in runs):
        parsed = [dict(_split_override(item) for item in run.overrides) for run in runs]
        keys = [k for k in dict.fromkeys(k for p in parsed for k in p) if k not in IGNORED_OVERRIDES and len({p.get(k) for p in parsed}) > 1]
        labels = [" ".join(f"{k}={p[k]}" if k in p else f"{k}=(default)" for k in keys) for p in parsed]
    counts = Counter(labels)
    return [name if not label else f"{label} [{name}]" if counts[label] > 1 else label for label, name in zip(labels, names)]


def compare_runs(runs: Sequence[Run], labels: Sequence[str], metric: str = "test_accuracy", target: float | None = None, goal: str | None = None) -> Comparison:
    """One row per run: final and best ``metric``, when it first reached ``target``, wall time.

    Args:
        runs: the runs, e.g. from :func:`load_runs`.
        labels: one label per run, e.g. from :func:`run_labels`.
        metric: a column of ``metrics.csv``.
        target: the value to reach; None: within 10% of the best final value over the
            runs (``best - 0.1 * |best|`` when higher is better, ``best + 0.1 * |best|``
            when lower is better).
        goal: ``max`` (higher is better) or ``min``; None: ``min`` for a metric whose name
            ends in ``loss``, else ``max``.

    Raises:
        CompareError: a run's ``metrics.csv`` has rows but no column ``metric``, or
            ``target`` is not finite, or ``goal`` is not ``max`` nor ``min``.
    """
    goal = goal or ("min" if metric.endswith("loss") else "max")
    if goal not in ("max", "min"):
        raise CompareError(f"--goal must be one of: max, min, got {goal!r}")
    if target is not None and not math.isfinite(target):
        raise CompareError(f"--target must be a finite number, got {target!r}")
    if len(labels) != len(runs):
        raise CompareError(f"need one label per run: {len(runs)} runs, {len(labels)} labels")
    series = [_series(run, metric) for run in runs]
    better = max if goal == "max" else min
    finals = [values[-1][1] for values in series if values]
    target_rule = "given with --target"
    if target is None and finals:
        best = better(finals)
        target = best - 0.1 * abs(best) if goal == "max" else best + 0.1 * abs(best)
        target_rule = f"within 10% of the best final value, {best:.4f}"
    name = metric.removeprefix("test_")
    columns = [column.format(name=name) for column in COLUMNS]
    rows = []
    for run, label, values in zip(runs, labels, series):
        reached = next((row for row, value in values if target is not None and (value >= target if goal == "max" else value <= target)), None)
        summary = run.summary or {}
        cells = [
            label, str(run.path), values[-1][1] if values else None, better(v for _, v in values) if values else None,
            reached["virtual_time"] if reached else None, reached["client_updates"] if reached else None,
            summary.get("wall_time"), summary.get("stop_reason"),
        ]  # fmt: skip
        rows.append(dict(zip(columns, cells)))
    _add_time_to_accuracy(runs, columns, rows)
    return Comparison(metric=metric, goal=goal, target=target, target_rule=target_rule, columns=columns, rows=rows)


def _add_time_to_accuracy(runs: Sequence[Run], columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Columns ``time_to_T`` and ``updates_to_T`` (and ``bytes_up``) for every target ``T`` of the runs' ``eval.time_to_accuracy``.

    Read from each run's ``summary.json`` (``time_to_accuracy``); a run without a target's
    entry shows it as not reached.
    """
    targets = sorted({t for run in runs for t in ((run.summary or {}).get("time_to_accuracy") or {})}, key=float)
    if not targets:
        return
    added = [c for t in targets for c in (f"time_to_{t}", f"updates_to_{t}")] + ["bytes_up"]
    columns[-2:-2] = added  # before wall_time and stop_reason
    for run, row in zip(runs, rows):
        summary = run.summary or {}
        reached = summary.get("time_to_accuracy") or {}
        for t in targets:
            entry = reached.get(t)
            row[f"time_to_{t}"] = None if entry is None else entry["virtual_time"]
            row[f"updates_to_{t}"] = None if entry is None else entry["client_updates"]
        row["bytes_up"] = summary.get("bytes_up")


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


def write_csv(comparison: Comparison, path: str | Path) -> Path:
    """Write ``compare.csv``: the rows with full-precision numbers; empty cells for None."""
    path = Path(path)
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=comparison.columns)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in comparison.rows)
    return path


def markdown(comparison: Comparison, image: str | None = "compare.png") -> str:
    """The table as Markdown, after a line that says the metric and the target."""
    direction = "higher" if comparison.goal == "max" else "lower"
    if comparison.target is None:
        head = f"Metric `{comparison.metric}` ({direction} is better); no run evaluated it, so no target."
    else:
        head = f"Metric `{comparison.metric}` ({direction} is better); target {comparison.target:.4f} ({comparison.target_rule})."
    lines = [f"# Comparison of {len(comparison.rows)} runs", "", head, "", "| " + " | ".join(comparison.columns) + " |", "|" + "---|" * len(comparison.columns)]
    for row in comparison.rows:
        lines.append("| " + " | ".join(_cell(column, row[column]) for column in comparison.columns) + " |")
    if image:
        lines += ["", f"![{comparison.metric} of every run]({image})"]
    return "\n".join(lines) + "\n"


def write_markdown(comparison: Comparison, path: str | Path, image: str | None = "compare.png") -> Path:
    """Write ``compare.md`` (see :func:`markdown`)."""
    path = Path(path)
    path.write_text(markdown(comparison, image))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code (2 for a path without runs or a bad option)."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_asyncfl.compare",
        description="Compare finished runs: compare.png, compare.md and compare.csv (see docs/comparing.md).",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="a run directory, or a directory above runs (e.g. a multirun directory)")
    parser.add_argument("--out", type=Path, default=None, help="where to write; default: the PATH when one is given, else the current directory")
    parser.add_argument("--target", type=float, default=None, help="the metric value to reach; default: within 10%% of the best final value")
    parser.add_argument("--metric", default="test_accuracy", help="a column of metrics.csv (default: test_accuracy)")
    parser.add_argument("--goal", choices=["max", "min"], default=None, help="higher (max) or lower (min) is better; default: min for *loss, else max")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else args.paths[0] if len(args.paths) == 1 else Path.cwd()
    try:
        runs = load_runs(args.paths)
        labels = run_labels(runs)
        comparison = compare_runs(runs, labels, metric=args.metric, target=args.target, goal=args.goal)
        out.mkdir(parents=True, exist_ok=True)
    except (CompareError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    groups = seed_groups(runs)
    summary = summarize_groups(groups, comparison) if any(len(g.runs) > 1 for g in groups) else None
    identical = identical_curves(runs, labels, args.metric)
    if summary is not None:
        plot_seed_bands(groups, args.metric, out / "compare.png", comparison.target)
        write_seed_csv(summary, out / "seeds.csv")
    else:
        plot_comparison(runs, labels, args.metric, out / "compare.png", comparison.target)
    written = ["compare.png", "compare.md", "compare.csv"] + (["seeds.csv"] if summary is not None else [])
    if plot_heatmap(groups, comparison, out / "heatmap.png") is not None:
        written.append("heatmap.png")
    write_csv(comparison, out / "compare.csv")
    text = markdown(comparison, image=None) + extra_markdown(summary, identical)
    (out / "compare.md").write_text(markdown(comparison) + extra_markdown(summary, identical, heatmap="heatmap.png" in written))
    print(text, end="")
    print(f"\nWrote {', '.join(written[:-1])} and {written[-1]} in {out.resolve()}")
    return 0


@dataclass(frozen=True)
class Group:
    """Runs of one setting: they differ in ``seed`` only.

    Attributes:
        label: the overrides that differ between the settings (``seed`` left out), or the
            first run's directory.
        runs: the runs, in the order found.
        settings: ``{key: value}`` of the overrides that differ between the settings.
    """

    label: str
    runs: list[Run]
    settings: dict[str, str]


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float | None, float | None]:
    """The mean of ``values`` and the half-width of its Student-t confidence interval.

    ``t_{(1+confidence)/2, n-1} · s / sqrt(n)`` with ``s`` the sample standard deviation
    (ddof 1); the half-width is None for fewer than two values, the mean None for none.
    """
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if len(x) == 0:
        return None, None
    if len(x) == 1:
        return float(x[0]), None
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(half)


def seed_groups(runs: Sequence[Run]) -> list[Group]:
    """Group runs whose overrides are equal but for ``seed`` (in order of first appearance).

    Runs without ``.hydra/overrides.yaml`` are groups of one, labelled by directory.
    """
    if not runs:
        return []
    names = _short_names([run.path for run in runs])
    if len(runs) < 2 or any(run.overrides is None for run in runs):
        return [Group(label=name, runs=[run], settings={}) for run, name in zip(runs, names)]
    parsed = [{k: v for k, v in map(_split_override, run.overrides) if k not in IGNORED_OVERRIDES and k != SEED_KEY} for run in runs]
    keys = [k for k in dict.fromkeys(k for p in parsed for k in p) if len({p.get(k) for p in parsed}) > 1]
    grouped: dict[tuple, list[int]] = {}
    for i, p in enumerate(parsed):
        grouped.setdefault(tuple(p.get(k, "(default)") for k in keys), []).append(i)
    groups = []
    for values, members in grouped.items():
        settings = dict(zip(keys, values))
        label = " ".join(f"{k}={v}" for k, v in settings.items()) or ("every run (they differ only in seed)" if len(members) > 1 else names[members[0]])
        groups.append(Group(label=label, runs=[runs[i] for i in members], settings=settings))
    return groups


#: the columns of ``seeds.csv``: each statistic as mean and 95% half-width over the seeds
SEED_COLUMNS = ["label", "seeds", "final_{name}", "final_{name}_ci", "best_{name}", "best_{name}_ci",
                "reached", "time_to_target", "time_to_target_ci", "updates_to_target", "updates_to_target_ci"]  # fmt: skip


@dataclass(frozen=True)
class SeedSummary:
    """The table of :func:`summarize_groups`: one row per setting, keyed by :attr:`columns`."""

    metric: str
    target: float | None
    columns: list[str]
    rows: list[dict[str, Any]]


def summarize_groups(groups: Sequence[Group], comparison: Comparison) -> SeedSummary:
    """Mean and 95% half-width over each setting's seeds of the final and best values and of the time and updates to the target.

    The time and updates to the target are averaged over the seeds that reached it
    (``reached`` says how many of how many did).
    """
    by_path = {row["run_dir"]: row for row in comparison.rows}
    name = comparison.metric.removeprefix("test_")
    columns = [c.format(name=name) for c in SEED_COLUMNS]
    rows = []
    for group in groups:
        members = [by_path[str(run.path)] for run in group.runs]
        cells: dict[str, Any] = {"label": group.label, "seeds": len(members)}
        for key in (f"final_{name}", f"best_{name}", "time_to_target", "updates_to_target"):
            cells[key], cells[f"{key}_ci"] = mean_ci([m[key] for m in members])
        cells["reached"] = f"{sum(m['time_to_target'] is not None for m in members)}/{len(members)}"
        rows.append({c: cells[c] for c in columns})
    return SeedSummary(metric=comparison.metric, target=comparison.target, columns=columns, rows=rows)


def write_seed_csv(summary: SeedSummary, path: str | Path) -> Path:
    """Write ``seeds.csv``: the rows of :func:`summarize_groups`, empty cells for None."""
    path = Path(path)
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=summary.columns)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in summary.rows)
    return path


def format_ci(mean: float | None, half: float | None, digits: int = 4) -> str:
    """``mean ± half`` (``mean`` alone for one seed, empty for none)."""
    if mean is None:
        return ""
    return f"{mean:.{digits}f}" if half is None else f"{mean:.{digits}f} ± {half:.{digits}f}"


def extra_markdown(summary: SeedSummary | None, identical: Sequence[tuple[str, str]] = (), heatmap: bool = False) -> str:
    """The seeds table (mean ± 95% CI) and the identical curves, as Markdown after :func:`markdown`."""
    lines: list[str] = []
    if summary is not None:
        name = summary.metric.removeprefix("test_")
        head = ["setting", "seeds", f"final_{name}", f"best_{name}", "reached", "time_to_target", "updates_to_target"]
        lines += ["", f"## Mean ± {CONFIDENCE:.0%} confidence interval over seeds (Student t)", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
        for row in summary.rows:
            cells = [
                str(row["label"]).replace("|", "\\|"), str(row["seeds"]),
                format_ci(row[f"final_{name}"], row[f"final_{name}_ci"]), format_ci(row[f"best_{name}"], row[f"best_{name}_ci"]),
                row["reached"], format_ci(row["time_to_target"], row["time_to_target_ci"], 2),
                format_ci(row["updates_to_target"], row["updates_to_target_ci"], 1),
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    if identical:
        lines += ["", "Identical curves (a swept key that did nothing?):", ""]
        lines += [f"- {a} = {b}" for a, b in identical]
    if heatmap:
        lines += ["", "![mean final value of each setting](heatmap.png)"]
    return "\n".join(lines) + ("\n" if lines else "")


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


def _series(run: Run, metric: str) -> list[tuple[dict[str, Any], float]]:
    """``(row, value)`` for every evaluation of ``run`` that has ``metric``."""
    if run.metrics and metric not in run.metrics[0]:
        columns = ", ".join(k for k in run.metrics[0] if k.startswith("test_")) or "none"
        raise CompareError(f"--metric {metric} is not a column of {run.path / METRICS_FILE} (its test_* columns: {columns})")
    return [(row, row[metric]) for row in run.metrics if row.get(metric) is not None]


def _styles(count: int) -> list[tuple[str, Any]]:
    """(linestyle, colour) per curve: the ten tab10 colours, then again with the next line style."""
    colors = plt.get_cmap("tab10").colors
    return [(["-", "--", ":", "-."][(i // len(colors)) % 4], colors[i % len(colors)]) for i in range(count)]


def _number(text: str | None) -> int | float | str | None:
    if text is None or text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _split_override(item: str) -> tuple[str, str]:
    key, _, value = item.partition("=")
    return key, value


def _short_names(paths: Sequence[Path]) -> list[str]:
    """Each path relative to the deepest directory that holds them all (its own name when that is itself)."""
    if not paths:
        return []
    common = Path(os.path.commonpath([str(p) for p in paths]))
    return [p.relative_to(common).as_posix() if p != common else p.name for p in paths]


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.as_posix())]


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "not reached" if column.startswith(("time_to_", "updates_to_")) else ""
    if isinstance(value, float):
        return f"{value:.2f}" if column.startswith("time_to_") or column == "wall_time" else f"{value:.4f}"
    return str(value).replace("|", "\\|")


if __name__ == "__main__":
    sys.exit(main())
