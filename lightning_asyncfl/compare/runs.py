"""Finished runs read from their directories, labelled, and tabulated: the core of ``compare``."""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: the file that makes a directory a run
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


def _series(run: Run, metric: str) -> list[tuple[dict[str, Any], float]]:
    """``(row, value)`` for every evaluation of ``run`` that has ``metric``."""
    if run.metrics and metric not in run.metrics[0]:
        columns = ", ".join(k for k in run.metrics[0] if k.startswith("test_")) or "none"
        raise CompareError(f"--metric {metric} is not a column of {run.path / METRICS_FILE} (its test_* columns: {columns})")
    return [(row, row[metric]) for row in run.metrics if row.get(metric) is not None]


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
