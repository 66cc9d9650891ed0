"""The pictures of a run: learning curves, staleness and participation, and the numbers behind them."""

from __future__ import annotations

import csv
import struct
from pathlib import Path

import numpy as np
import pytest

from lightning_asyncfl.callbacks.files import UPDATE_COLUMNS
from lightning_asyncfl.callbacks.plots import (
    group_counts,
    participation_counts,
    plot_participation,
    read_updates,
    staleness_counts,
    write_run_figures,
)
from lightning_asyncfl.run import run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG file, from its IHDR chunk; fails on anything that is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def write_updates(path: Path, rows: list[dict]) -> None:
    """An ``updates.csv`` with the real columns; cells not given stay empty."""
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=UPDATE_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)


def history(*columns: str) -> list[dict]:
    """Three evaluation rows with the loop's keys and the given ``test_*`` columns."""
    return [{"version": v, "client_updates": 2 * v, "virtual_time": 0.5 * v, "wall_time": 0.1, **{c: 0.1 * (v + 1) for c in columns}} for v in range(3)]


def test_a_run_writes_every_picture_and_they_count_what_the_summary_counts(make_cfg):
    # Prepare: max_staleness=2 so that some updates are rejected as stale
    cfg = make_cfg("server.max_staleness=2")

    # Execute
    summary = run(cfg)

    # Assert
    out = Path(cfg.output_dir)
    assert png_size(out / "accuracy.png") == (1000, 800)  # accuracy and loss rows, each against time and updates
    assert png_size(out / "staleness.png") == (700, 400)
    assert png_size(out / "participation.png") == (1000, 400)
    updates = read_updates(out / "updates.csv")
    accepted, stale = staleness_counts(updates, "accepted"), staleness_counts(updates, "stale")
    assert summary["rejected"]["stale"] > 0, "the setting must produce stale rejections for this test to mean anything"
    assert accepted.sum() == summary["accepted"]
    assert stale.sum() == summary["rejected"]["stale"]
    assert len(accepted) <= 3 and stale[:3].sum() == 0  # accepted have staleness <= 2, rejected > 2
    per_client = participation_counts(updates, summary["num_clients"])
    assert list(per_client) == ["accepted", "stale"]
    assert all(len(counts) == summary["num_clients"] == 20 for counts in per_client.values())
    assert per_client["accepted"].sum() == summary["accepted"]
    assert sum(c.sum() for c in per_client.values()) == summary["client_updates"] == len(updates)


def test_nothing_to_show_writes_nothing_and_does_not_fail(tmp_path):
    # Execute: no evaluation, no updates.csv
    written = write_run_figures(tmp_path, [], title="t", num_clients=5)

    # Assert
    assert written == {}
    assert list(tmp_path.iterdir()) == []


def test_accuracy_without_loss_is_one_row_and_an_empty_updates_csv_gives_no_update_pictures(tmp_path):
    # Prepare
    write_updates(tmp_path / "updates.csv", [])

    # Execute
    written = write_run_figures(tmp_path, history("test_accuracy"), num_clients=5)

    # Assert
    assert list(written) == ["accuracy.png"]
    assert png_size(tmp_path / "accuracy.png") == (1000, 400)
    assert not (tmp_path / "staleness.png").exists() and not (tmp_path / "participation.png").exists()


def test_a_model_that_logs_only_a_loss_still_gets_its_curves(tmp_path):
    written = write_run_figures(tmp_path, history("test_loss"))

    assert list(written) == ["accuracy.png"]
    assert png_size(tmp_path / "accuracy.png") == (1000, 400)


def test_only_failed_updates_give_participation_but_no_staleness_histogram(tmp_path):
    # Prepare: every job failed, so nothing was accepted or rejected as stale
    rows = [{"job_id": i, "client_id": c, "staleness": 0, "status": "failed", "detail": "RuntimeError: boom"} for i, c in enumerate([0, 2, 2])]
    write_updates(tmp_path / "updates.csv", rows)

    # Execute
    written = write_run_figures(tmp_path, [], num_clients=4)

    # Assert
    assert list(written) == ["participation.png"]
    counts = participation_counts(read_updates(tmp_path / "updates.csv"), 4)
    assert {k: v.tolist() for k, v in counts.items()} == {"accepted": [0, 0, 0, 0], "failed": [1, 0, 2, 0]}


def test_only_stale_rejections_still_give_a_staleness_histogram(tmp_path):
    rows = [{"job_id": i, "client_id": 1, "staleness": s, "status": "stale"} for i, s in enumerate([4, 6, 4])]
    write_updates(tmp_path / "updates.csv", rows)

    written = write_run_figures(tmp_path, [])

    assert list(written) == ["staleness.png", "participation.png"]
    updates = read_updates(tmp_path / "updates.csv")
    assert staleness_counts(updates, "accepted").tolist() == []
    assert staleness_counts(updates, "stale").tolist() == [0, 0, 0, 0, 2, 0, 1]
    assert participation_counts(updates)["stale"].tolist() == [0, 3]  # num_clients None: up to the highest id seen


def test_group_counts_sums_consecutive_values_into_at_most_max_bars():
    assert [a.tolist() for a in group_counts(np.arange(10), max_bars=3)] == [[6, 22, 17], [4, 4, 2]]
    assert [a.tolist() for a in group_counts(np.arange(4), max_bars=100)] == [[0, 1, 2, 3], [1, 1, 1, 1]]
    assert [a.tolist() for a in group_counts(np.zeros(0, dtype=np.int64))] == [[], []]


def test_participation_of_a_large_federation_is_drawn_as_grouped_bars(tmp_path):
    # Prepare: 5,000 clients, every 7th sends one accepted update
    updates = [{"client_id": c, "staleness": 0, "status": "accepted"} for c in range(0, 5000, 7)]

    # Execute
    path = plot_participation(updates, tmp_path / "participation.png", num_clients=5000)

    # Assert
    assert png_size(path) == (1000, 400)
    sums, sizes = group_counts(participation_counts(updates, 5000)["accepted"])
    assert len(sums) == 100 and set(sizes.tolist()) == {50}
    assert sums.sum() == len(updates) == 715


def test_a_client_id_outside_the_federation_is_an_error_that_names_it():
    with pytest.raises(ValueError, match=r"client_id must be in \[0, 3\) with num_clients=3, got 7"):
        participation_counts([{"client_id": 7, "status": "accepted"}], num_clients=3)


@pytest.mark.filterwarnings("ignore:No artists with labels")  # the bars are recorded, not drawn
def test_participation_sorted_by_speed_puts_the_fastest_client_first(tmp_path, monkeypatch):
    # Prepare: client 2 is fastest (mean 1.0), then 0 (mean 2.0), then 1 (3.0); client 3 never sent anything
    import lightning_asyncfl.callbacks.plots as plots

    rows = [
        {"client_id": 0, "staleness": 0, "status": "accepted", "dispatch_time": 0.0, "arrival_time": 1.0},
        {"client_id": 0, "staleness": 0, "status": "accepted", "dispatch_time": 1.0, "arrival_time": 4.0},
        {"client_id": 1, "staleness": 1, "status": "stale", "dispatch_time": 0.0, "arrival_time": 3.0},
        {"client_id": 2, "staleness": 0, "status": "accepted", "dispatch_time": 0.0, "arrival_time": 1.0},
    ]
    heights = []
    monkeypatch.setattr(plots, "_bars", lambda ax, sizes, h, bottom, color, label: heights.append(list(h)))

    # Execute
    order = plots.client_speed_order(rows, 4)
    plot_participation(rows, tmp_path / "p.png", num_clients=4, order="speed")

    # Assert: bars in speed order: accepted counts [1, 2, 0, 0], stale [0, 0, 1, 0]
    assert order.tolist() == [2, 0, 1, 3]
    assert heights == [[1, 2, 0, 0], [0, 0, 1, 0]]
    with pytest.raises(ValueError, match="figures.participation_order must be one of: id, speed, got 'fast'"):
        plot_participation(rows, tmp_path / "p.png", num_clients=4, order="fast")


def test_figure_titles_carry_the_run_key_hyperparameters(make_cfg, monkeypatch):
    import lightning_asyncfl.callbacks.plots as plots

    titles = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path, title: titles.append(title) or save(fig, path, title))

    run(make_cfg("server.aggregator.alpha=0.3", "seed=3", "partition.beta=0.7"))

    assert len(titles) == 3 and len(set(titles)) == 1
    assert titles[0] == (
        "FedAsync(alpha=0.3, staleness=Polynomial(a=0.5)) on Digits, Dirichlet(beta=0.7, min_samples=10, max_tries=1000), "
        "20 clients, seed 3"
    )
