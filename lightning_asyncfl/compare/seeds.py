"""Runs that differ only in ``seed``: grouped per setting, as mean ± Student-t confidence interval."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from lightning_asyncfl.compare.runs import CONFIDENCE, IGNORED_OVERRIDES, SEED_KEY, Comparison, Run, _short_names, _split_override


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

