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

import importlib
from collections.abc import Sequence
from typing import Any

from lightning_asyncfl.compare.runs import (
    COLUMNS,
    CONFIDENCE,
    IGNORED_OVERRIDES,
    METRICS_FILE,
    SEED_KEY,
    CompareError,
    Comparison,
    Run,
    compare_runs,
    find_runs,
    load_run,
    load_runs,
    markdown,
    run_labels,
    write_csv,
    write_markdown,
)
from lightning_asyncfl.compare.seeds import SEED_COLUMNS, Group, SeedSummary, extra_markdown, format_ci, mean_ci, seed_groups, summarize_groups, write_seed_csv

__all__ = [
    "COLUMNS", "CONFIDENCE", "IGNORED_OVERRIDES", "METRICS_FILE", "SEED_COLUMNS", "SEED_KEY", "CompareError", "Comparison", "Group", "Run",
    "SeedSummary", "band", "compare_runs", "extra_markdown", "find_runs", "format_ci", "identical_curves", "load_run", "load_runs", "main",
    "markdown", "mean_ci", "plot_comparison", "plot_heatmap", "plot_seed_bands", "run_labels", "seed_groups", "short_labels",
    "summarize_groups", "write_csv", "write_markdown", "write_seed_csv",
]  # fmt: skip


def __getattr__(name: str) -> Any:  # the pictures import matplotlib: only when one is asked for
    plots = importlib.import_module("lightning_asyncfl.compare.plots")
    if name in plots.__all__:
        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see :mod:`lightning_asyncfl.compare.cli`); returns the exit code."""
    from lightning_asyncfl.compare.cli import main as _main

    return _main(argv)
