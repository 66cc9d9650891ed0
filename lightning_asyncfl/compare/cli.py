"""``python -m lightning_asyncfl.compare PATH...``: parse the command line, write the table and the pictures."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lightning_asyncfl.compare.plots import identical_curves, plot_comparison, plot_heatmap, plot_seed_bands
from lightning_asyncfl.compare.runs import CompareError, compare_runs, load_runs, markdown, run_labels, write_csv
from lightning_asyncfl.compare.seeds import extra_markdown, seed_groups, summarize_groups, write_seed_csv


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

