"""A partition report: how many samples of each class every client holds, as CSV and PNG.

:func:`write_partition_report` writes two files into a directory:

- ``partition.csv``: one row per client, with the header
  ``client,num_samples,class_0,...,class_{C-1}`` (C = the data module's ``num_classes``);
- ``partition.png``: a heat map of samples per client (rows) and class (columns), with a
  colour bar, beside a bar chart of each client's total; readable from a handful of
  clients to a thousand (row labels are thinned, the figure's height is capped); above
  :data:`MAX_ROWS` clients it draws an even sample of them by id and says so (a million
  clients: 1,000 rows, the CSV still holds every client).
"""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path

import numpy as np

from lightning_asyncfl._lazy import pyplot
from lightning_asyncfl.data.datamodule import FederatedDataModule


def class_counts(data: FederatedDataModule) -> np.ndarray:
    """Samples of each class per client: int64, shape ``(num_clients, num_classes)``.

    Sets the data module up first if it is not yet (``setup`` is idempotent).
    """
    data.setup()
    from lightning_asyncfl.data.packed import PackedIndices  # torch, imported when counted

    targets = np.asarray(data.train_targets)
    packed = PackedIndices.of(data.client_indices)  # as is when the data module packed them already
    num_clients, num_classes = len(packed), data.num_classes
    owner = np.repeat(np.arange(num_clients, dtype=np.int64), np.diff(packed.offsets.numpy()))
    cells = owner * num_classes + targets[packed.flat.numpy()]
    return np.bincount(cells, minlength=num_clients * num_classes).reshape(num_clients, num_classes).astype(np.int64)


def write_partition_report(data: FederatedDataModule, out_dir: Path) -> tuple[Path, Path]:
    """Write ``partition.csv`` and ``partition.png`` for the data module's partition.

    Args:
        data: the data module; set up first if it is not yet.
        out_dir: the directory to write into; created if missing.

    Returns:
        ``(csv_path, png_path)``.
    """
    counts = class_counts(data)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "partition.csv"
    with csv_path.open("w", newline="") as f:
        csv.writer(f).writerow(["client", "num_samples", *(f"class_{c}" for c in range(counts.shape[1]))])
        table = np.column_stack([np.arange(len(counts)), counts.sum(axis=1), counts])
        np.savetxt(f, table, fmt="%d", delimiter=",")  # one row per client, a million of them in seconds
    png_path = out_dir / "partition.png"
    title = f"{type(data).__name__}: {len(data.train_targets)} training samples, {counts.shape[0]} clients\n{data.partition!r}"
    plot_partition(counts, png_path, title)
    return csv_path, png_path


#: at most this many client rows in partition.png; above it, an even sample of the clients
MAX_ROWS = 1000


def sample_rows(num_clients: int, max_rows: int = MAX_ROWS) -> np.ndarray | None:
    """The clients ``partition.png`` shows: None for all of them, else ``max_rows`` evenly spaced ids (first and last included)."""
    if num_clients <= max_rows:
        return None
    return np.unique(np.linspace(0, num_clients - 1, max_rows).round().astype(np.int64))


def plot_partition(counts: np.ndarray, path: Path, title: str = "") -> Path:
    """Draw ``counts`` (clients × classes): each client's class shares as a heat map, its total as a bar.

    The heat map's colour is the share of the client's samples in each class (white: none),
    so label skew shows whatever the client sizes; the bars beside it show the sizes. Up to
    30 clients and 20 classes, each cell also prints its count. Above :data:`MAX_ROWS`
    clients, the picture shows an even sample of them (by id) and says so; the CSV keeps
    every client.
    """
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    total_clients = len(counts)
    shown = sample_rows(total_clients)
    if shown is not None:  # a million rows would be one grey smear: an even sample of the clients, by id
        counts = counts[shown]
    num_clients, num_classes = counts.shape
    totals = counts.sum(axis=1)
    shares = counts / np.maximum(totals, 1)[:, None]
    height = float(np.clip(2.0 + 0.25 * num_clients, 4.5, 12.0))
    width = float(np.clip(6.0 + 0.12 * num_classes, 9.0, 18.0))
    fig, (heat_ax, bar_ax) = plt.subplots(
        1, 2, figsize=(width, height), sharey=True, gridspec_kw={"width_ratios": [3, 1]}, layout="constrained"
    )
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")  # white: a class the client lacks
    image = heat_ax.imshow(
        np.ma.masked_where(counts == 0, shares),
        aspect="auto",
        interpolation="nearest",
        cmap=cmap,
        vmin=0.0,
        vmax=1.0,
        extent=(-0.5, num_classes - 0.5, num_clients - 0.5, -0.5),
    )
    fig.colorbar(image, ax=heat_ax, location="bottom", shrink=0.6, aspect=40, label="share of the client's samples")
    heat_ax.set_xlabel("class")
    heat_ax.set_ylabel("client" if shown is None else f"client ({num_clients:,} of {total_clients:,}, evenly spaced ids)")
    heat_ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(num_classes, 20)))
    heat_ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(num_clients, 25)))
    if shown is not None:  # the ticks name the clients' ids, not the rows
        heat_ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{shown[int(np.clip(round(y), 0, num_clients - 1))]:,}"))
    if num_clients <= 60:  # thin lines between the cells, where they can be seen
        heat_ax.set_yticks(np.arange(num_clients + 1) - 0.5, minor=True)
        heat_ax.set_xticks(np.arange(num_classes + 1) - 0.5, minor=True)
        heat_ax.grid(which="minor", color="0.85", linewidth=0.5)
        heat_ax.tick_params(which="minor", length=0)
    if num_clients <= 30 and num_classes <= 20:
        for k, c in zip(*np.nonzero(counts)):
            colour = "black" if shares[k, c] > 0.6 else "white"
            heat_ax.text(c, k, str(counts[k, c]), ha="center", va="center", fontsize=7, color=colour)
    rows = np.arange(num_clients)
    if num_clients <= 60:
        bar_ax.barh(rows, totals, height=0.8, color="0.35", linewidth=0)
    else:  # a filled profile: a thousand one-pixel bars would alias
        bar_ax.fill_betweenx(np.repeat(np.arange(num_clients + 1) - 0.5, 2)[1:-1], 0, np.repeat(totals, 2), color="0.35", linewidth=0)
    bar_ax.set_xlim(0, max(int(totals.max(initial=0)), 1) * 1.05)
    bar_ax.set_xlabel("samples")
    bar_ax.set_ylim(num_clients - 0.5, -0.5)
    bar_ax.grid(axis="x", alpha=0.3)
    bar_ax.tick_params(axis="y", labelleft=False)
    if title:
        fig.suptitle("\n".join(textwrap.fill(line, 110) for line in title.splitlines()), fontsize=10)
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
