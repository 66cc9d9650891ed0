"""Pictures of a run: learning curves, staleness of the updates, and who took part.

:func:`write_run_figures` writes all of them into a run directory at the end of
:func:`lightning_asyncfl.run.run`:

- ``accuracy.png``: test accuracy (top) and test loss (bottom, when the model logs it),
  each against virtual time and against client updates, from the evaluation history;
- ``staleness.png``: how many accepted updates had each staleness (and, stacked on top,
  how many were rejected as too stale), from ``updates.csv``;
- ``participation.png``: the rows of ``updates.csv`` per client, one colour per
  status (accepted, stale, failed, ...), in client id order or sorted by speed;
- ``client_accuracy.png``: a histogram of the global model's accuracy on each client's
  own test data at the last per-client evaluation (``client_metrics.csv``).

A picture with nothing to show is not written (no ``test_accuracy`` nor ``test_loss``
logged, no ``updates.csv`` or no row in it). The counting is done by pure functions
(:func:`read_updates`, :func:`staleness_counts`, :func:`participation_counts`) so that
tests can check the numbers behind each picture.
"""

from __future__ import annotations

import csv
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lightning_asyncfl._lazy import pyplot
from lightning_asyncfl.callbacks.base import Callback


#: at most this many bars per picture: above it, bars group consecutive values (100,000 clients draw in a blink)
MAX_BARS = 100
#: colours of the statuses of ``updates.csv``; any other status takes one of _SPARE_COLORS
STATUS_COLORS = {"accepted": "tab:blue", "stale": "tab:red", "failed": "tab:gray", "non_finite": "tab:purple", "shape": "tab:brown"}
_SPARE_COLORS = ("tab:orange", "tab:olive", "tab:cyan", "tab:pink", "tab:green")
_CURVES = (("test_accuracy", "test accuracy"), ("test_loss", "test loss"))
_AXES = (("virtual_time", "virtual time (s)"), ("client_updates", "client updates"))


def plot_accuracy(history: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Write the learning curves (``accuracy.png``) from the loop's evaluation history.

    One row of two panels per logged metric: ``test_accuracy``, then ``test_loss``; the
    left panel against virtual time, the right one against client updates.

    Args:
        history: the loop's evaluation rows (``version``, ``client_updates``,
            ``virtual_time``, ``test_*``), as in ``metrics.csv``.
        path: the PNG file to write.
        title: the figure's title, e.g. ``FedBuff on Digits``.

    Returns:
        ``path``, or None (nothing written) when neither metric was logged.
    """
    plt = pyplot()
    curves = [(key, label) for key, label in _CURVES if any(key in row for row in history)]
    if not curves:
        return None
    fig, axes = plt.subplots(len(curves), 2, figsize=(10, 4 * len(curves)), sharey="row", squeeze=False)
    for (key, label), row_axes in zip(curves, axes):
        rows = [row for row in history if key in row]
        for ax, (x_key, x_label) in zip(row_axes, _AXES):
            ax.plot([row[x_key] for row in rows], [row[key] for row in rows], marker=".", linewidth=1.2)
            ax.set_xlabel(x_label)
            ax.grid(alpha=0.3)
        row_axes[0].set_ylabel(label)
    return _save(fig, path, title)


def read_updates(path: str | Path) -> list[dict[str, Any]]:
    """The rows of an ``updates.csv``, with ``client_id`` and ``staleness`` as ints; [] if there is no file."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    for row in rows:
        row["client_id"], row["staleness"] = int(row["client_id"]), int(row["staleness"])
    return rows


def staleness_counts(updates: Sequence[dict[str, Any]], status: str = "accepted") -> np.ndarray:
    """``counts[s]``: how many updates with this ``status`` arrived with staleness ``s`` (empty if none)."""
    staleness = [row["staleness"] for row in updates if row["status"] == status]
    return np.bincount(np.asarray(staleness, dtype=np.int64), minlength=0)


def participation_counts(updates: Sequence[dict[str, Any]], num_clients: int | None = None) -> dict[str, np.ndarray]:
    """Rows of ``updates.csv`` per client id, by status: ``{"accepted": counts, "stale": counts, ...}``.

    ``accepted`` comes first (always present), then the other statuses in order of first
    appearance; each array has one entry per client.

    Args:
        updates: rows of ``updates.csv`` (see :func:`read_updates`).
        num_clients: the federation's size, so that clients without a row count 0;
            None: one past the highest client id seen.

    Raises:
        ValueError: a client id is outside ``[0, num_clients)``.
    """
    ids = np.asarray([row["client_id"] for row in updates], dtype=np.int64)
    size = int(ids.max()) + 1 if num_clients is None and len(ids) else int(num_clients or 0)
    outside = ids[(ids < 0) | (ids >= size)]
    if len(outside):
        raise ValueError(f"client_id must be in [0, {size}) with num_clients={num_clients}, got {int(outside[0])}")
    statuses = np.asarray([row["status"] for row in updates], dtype=object)
    return {status: np.bincount(ids[statuses == status], minlength=size) for status in dict.fromkeys(["accepted", *statuses])}


def group_counts(counts: np.ndarray, max_bars: int = MAX_BARS) -> tuple[np.ndarray, np.ndarray]:
    """Sum ``counts`` over runs of consecutive indices so that at most ``max_bars`` remain.

    Returns:
        ``(sums, sizes)``: ``sums[j]`` adds ``counts`` over indices ``[j*g, j*g + sizes[j])``
        with ``g = ceil(len(counts) / max_bars)`` (1 when ``counts`` is short enough);
        only the last group can be smaller.
    """
    group = max(1, -(-len(counts) // max_bars))
    starts = np.arange(0, len(counts), group)
    return np.add.reduceat(counts, starts) if len(counts) else counts, np.diff(np.append(starts, len(counts)))


def plot_staleness(updates: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Write ``staleness.png``: a histogram of the staleness of accepted updates, with stale rejections stacked.

    One bar per staleness value, or per run of consecutive values when there are more
    than :data:`MAX_BARS` of them.

    Returns:
        ``path``, or None (nothing written) when no update was accepted or rejected as stale.
    """
    plt = pyplot()
    accepted, stale = staleness_counts(updates, "accepted"), staleness_counts(updates, "stale")
    if not accepted.sum() and not stale.sum():
        return None
    size = max(len(accepted), len(stale))
    accepted, stale = np.pad(accepted, (0, size - len(accepted))), np.pad(stale, (0, size - len(stale)))
    mean = (np.arange(size) * accepted).sum() / accepted.sum() if accepted.sum() else float("nan")
    (accepted_bars, sizes), (stale_bars, _) = group_counts(accepted), group_counts(stale)
    fig, ax = plt.subplots(figsize=(7, 4))
    _bars(ax, sizes, accepted_bars, np.zeros(len(sizes)), STATUS_COLORS["accepted"], f"accepted ({accepted.sum()})")
    if stale.sum():
        _bars(ax, sizes, stale_bars, accepted_bars, STATUS_COLORS["stale"], f"rejected as stale ({stale.sum()})")
    per_bar = "" if sizes[0] == 1 else f", {sizes[0]} values per bar"
    ax.set_xlabel(f"staleness (versions{per_bar}); mean of accepted {mean:.2f}")
    ax.set_ylabel("updates")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend()
    return _save(fig, path, title)


def client_speed_order(updates: Sequence[dict[str, Any]], num_clients: int) -> np.ndarray:
    """Client ids, fastest first: by mean job duration (``arrival_time - dispatch_time``) in ``updates``.

    Clients without a row come last; ties keep id order.
    """
    total, jobs = np.zeros(num_clients), np.zeros(num_clients)
    for row in updates:
        k = int(row["client_id"])
        total[k] += float(row["arrival_time"]) - float(row["dispatch_time"])
        jobs[k] += 1
    mean = np.where(jobs > 0, total / np.maximum(jobs, 1), np.inf)
    return np.argsort(mean, kind="stable")


def plot_participation(
    updates: Sequence[dict[str, Any]], path: str | Path, num_clients: int | None = None, title: str = "", order: str = "id"
) -> Path | None:
    """Write ``participation.png``: the rows of ``updates.csv`` per client, one colour per status, stacked.

    One bar per client; with more than :data:`MAX_BARS` clients, one bar per run of
    consecutive positions, its height the mean per client over the run.

    Args:
        order: ``id`` (client id order) or ``speed`` (fastest first, see :func:`client_speed_order`).

    Returns:
        ``path``, or None (nothing written) when ``updates`` is empty.
    """
    plt = pyplot()
    if order not in ("id", "speed"):
        raise ValueError(f"figures.participation_order must be one of: id, speed, got {order!r}")
    if not updates:
        return None
    counts = participation_counts(updates, num_clients)
    if order == "speed":
        ranked = client_speed_order(updates, len(next(iter(counts.values()))))
        counts = {status: per_client[ranked] for status, per_client in counts.items()}
    fig, ax = plt.subplots(figsize=(10, 4))
    bottom = None
    for i, (status, per_client) in enumerate(counts.items()):
        heights, sizes = group_counts(per_client)
        heights = heights / sizes
        bottom = np.zeros(len(sizes)) if bottom is None else bottom
        color = STATUS_COLORS.get(status, _SPARE_COLORS[i % len(_SPARE_COLORS)])
        _bars(ax, sizes, heights, bottom, color, f"{status} ({per_client.sum()})")
        bottom = bottom + heights
    total = sum(counts.values())
    per_bar = "" if sizes[0] == 1 else f"; each bar: mean over {sizes[0]} consecutive ids"
    what = "client id" if order == "id" else "clients, fastest first (mean job duration)"
    ax.set_xlabel(f"{what} ({int((total > 0).sum())} of {len(total)} clients sent updates{per_bar})")
    ax.set_ylabel("updates per client")
    if sizes[0] == 1:
        ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend()
    return _save(fig, path, title)


def read_client_metrics(path: str | Path) -> dict[str, np.ndarray] | None:
    """The last per-client evaluation of a ``client_metrics.csv``: ``version``, ``num_samples``, ``accuracy``, ``loss``; None without one."""
    path = Path(path)
    if not path.is_file():
        return None
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    if not rows:
        return None
    version = max(int(row["version"]) for row in rows)
    last = sorted((row for row in rows if int(row["version"]) == version), key=lambda row: int(row["client_id"]))
    return {
        "version": np.asarray(version),
        "num_samples": np.asarray([int(row["num_samples"]) for row in last]),
        "accuracy": np.asarray([float(row["accuracy"]) for row in last]),
        "loss": np.asarray([float(row["loss"]) for row in last]),
    }


def plot_client_accuracy(per_client: dict[str, np.ndarray] | None, path: str | Path, title: str = "", threshold: float | None = None) -> Path | None:
    """Write ``client_accuracy.png``: a histogram of the accuracy of each client with test samples.

    Returns:
        ``path``, or None (nothing written) without per-client metrics.
    """
    plt = pyplot()
    if per_client is None:
        return None
    accuracy = per_client["accuracy"][per_client["num_samples"] > 0]
    if not len(accuracy):
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(accuracy, bins=np.linspace(0, 1, 21), color="tab:blue", edgecolor="white")
    mean, worst = accuracy.mean(), np.sort(accuracy)[: max(1, -(-len(accuracy) // 10))].mean()
    ax.axvline(mean, color="black", linewidth=1, label=f"mean {mean:.3f}")
    ax.axvline(worst, color="tab:red", linestyle="--", linewidth=1, label=f"worst 10% {worst:.3f}")
    if threshold is not None:
        ax.axvline(threshold, color="tab:gray", linestyle=":", linewidth=1, label=f"threshold {threshold:g}")
    ax.set_xlabel(f"accuracy on the client's own test data (version {int(per_client['version'])}, {len(accuracy)} clients)")
    ax.set_ylabel("clients")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend()
    return _save(fig, path, title)


def write_run_figures(
    out_dir: str | Path, history: Sequence[dict[str, Any]], title: str = "", num_clients: int | None = None, participation_order: str = "id"
) -> dict[str, Path]:
    """Write every picture of a run into ``out_dir``; ``updates.csv`` and ``client_metrics.csv`` are read from there.

    Args:
        out_dir: the run directory.
        history: the loop's evaluation rows (as in ``metrics.csv``).
        title: the title of every figure: the run's key hyperparameters.
        num_clients: the federation's size (clients that never sent an update show as 0).
        participation_order: ``id`` or ``speed`` (see :func:`plot_participation`).

    Returns:
        The written files by name, e.g. ``{"accuracy.png": Path(...), ...}``; a picture
        with nothing to show is left out.
    """
    out_dir = Path(out_dir)
    updates = read_updates(out_dir / "updates.csv")
    written = {
        "accuracy.png": plot_accuracy(history, out_dir / "accuracy.png", title),
        "staleness.png": plot_staleness(updates, out_dir / "staleness.png", title),
        "participation.png": plot_participation(updates, out_dir / "participation.png", num_clients, title, participation_order),
        "client_accuracy.png": plot_client_accuracy(read_client_metrics(out_dir / "client_metrics.csv"), out_dir / "client_accuracy.png", title),
    }
    return {name: path for name, path in written.items() if path is not None}


class RunFigures(Callback):
    """Writes the run's figures (:func:`write_run_figures`) when the run completes, before the loggers close.

    Args:
        out_dir: the run directory (``updates.csv`` and ``client_metrics.csv`` are read there).
        title: the title of every figure.
        participation_order: ``id`` or ``speed``.

    Attributes:
        written: the figures written, by file name ({} until the run completed).
    """

    def __init__(self, out_dir: str | Path, *, title: str = "", participation_order: str = "id") -> None:
        self.out_dir, self.title, self.participation_order = Path(out_dir), title, participation_order
        self.written: dict[str, Path] = {}

    def on_run_end(self, loop: Any, summary: dict[str, Any]) -> None:
        if loop.status == "completed":
            self.written = write_run_figures(self.out_dir, [dict(row) for row in loop.history], self.title, loop.num_clients, self.participation_order)


def _bars(ax: Any, sizes: np.ndarray, heights: np.ndarray, bottom: np.ndarray, color: str, label: str) -> None:
    """Bars over the index groups of :func:`group_counts` (sizes), stacked on ``bottom``."""
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    ax.bar(starts + (sizes - 1) / 2, heights, bottom=bottom, width=0.8 * sizes, color=color, label=label)
    ax.xaxis.get_major_locator().set_params(integer=True)


def _save(fig: Any, path: str | Path, title: str) -> Path:
    plt = pyplot()
    if title:
        fig.suptitle(textwrap.fill(title, int(12 * fig.get_figwidth())), fontsize="medium")  # about 12 characters an inch
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
