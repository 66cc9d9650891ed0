"""Cross-device rounds: over-selection keeps the first m updates, a deadline closes a round with what arrived."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from lightning_asyncfl.errors import InvalidValues
from lightning_asyncfl.run import run
from lightning_asyncfl.schedulers import RoundScheduler

ROUND = ["server=fedavg", "server.scheduler.clients_per_round=4", "server.max_steps=6", "server.eval_every=3"]


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "updates.csv").open() as handle:
        return list(csv.DictReader(handle))


def _rounds(rows: list[dict[str, str]]) -> dict[float, list[dict[str, str]]]:
    rounds: dict[float, list[dict[str, str]]] = {}
    for row in rows:
        rounds.setdefault(float(row["dispatch_time"]), []).append(row)
    return rounds


def test_over_selection_dispatches_more_and_aggregates_the_first_m_arrivals(make_cfg):
    # Execute: select ceil(1.5 x 4) = 6 per round, keep the first 4
    summary = run(make_cfg(*ROUND, "server.scheduler.over_selection=1.5"))

    # Assert
    rows = _rows(Path(summary["output_dir"]))
    rounds = _rounds(rows)
    assert summary["steps"] == 6 and summary["accounting"]["balanced"]
    starts = sorted(rounds)
    for start, nxt in zip(starts, starts[1:]):
        cohort = sorted(rounds[start], key=lambda r: (float(r["arrival_time"]), int(r["job_id"])))
        assert len(cohort) == 6
        accepted = [r for r in cohort if r["status"] == "accepted"]
        assert accepted == cohort[:4]  # the first four arrivals
        assert nxt == float(cohort[3]["arrival_time"])  # the next round starts when the fourth arrives
        assert all(r["status"] == "late" for r in cohort[4:] if float(r["arrival_time"]) > nxt)
    assert summary["rejected"].get("late", 0) > 0


def test_a_deadline_closes_each_round_with_the_updates_that_arrived_in_time(make_cfg):
    # Prepare: a deadline shorter than the slowest clients' jobs
    deadline = 0.012
    summary = run(make_cfg(*ROUND, f"server.scheduler.deadline={deadline}", "system.jitter=0"))

    # Assert: every round closes at start + deadline at the latest; in-time updates are aggregated, the rest are late
    rows = _rows(Path(summary["output_dir"]))
    rounds = _rounds(rows)
    assert summary["accounting"]["balanced"] and summary["rejected"].get("late", 0) > 0
    starts = sorted(rounds)
    for start, nxt in zip(starts, starts[1:]):
        assert nxt <= start + deadline + 1e-12
        for row in rounds[start]:
            in_time = float(row["arrival_time"]) <= start + deadline
            assert row["status"] == ("accepted" if in_time else "late")


def test_classic_rounds_are_unchanged_by_the_new_keys(make_cfg):
    # Execute: the defaults (over_selection 1, no deadline) wait for every client
    summary = run(make_cfg(*ROUND))

    # Assert: every round's four updates are all accepted and the next round starts after the last arrives
    rounds = _rounds(_rows(Path(summary["output_dir"])))
    starts = sorted(rounds)
    for start, nxt in zip(starts, starts[1:]):
        assert len(rounds[start]) == 4 and all(r["status"] == "accepted" for r in rounds[start])
        assert nxt == max(float(r["arrival_time"]) for r in rounds[start])


def test_bad_round_settings_name_the_key():
    with pytest.raises(InvalidValues) as error:
        RoundScheduler(clients_per_round=4, over_selection=0.5, deadline=-1)
    assert "over_selection" in str(error.value) and "deadline" in str(error.value)
    assert RoundScheduler(clients_per_round=10, over_selection=1.3).cohort == math.ceil(13.0) == 13
