"""The fault matrix: every server preset under each kind of fault, on one process and on worker processes.

Whatever happens, a run ends; its status is honest (``completed`` only at a stop rule,
otherwise ``failed`` with the reason); every dispatched job is accounted for; and
``updates.csv`` agrees with ``summary.json`` row for row. The default suite runs one cell
per fault; the whole matrix is ``@pytest.mark.slow``.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from lightning_asyncfl.errors import RunFailed
from lightning_asyncfl.run import run

SERVERS = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "server").glob("*.yaml"))
FAULTS = {
    "error-0.5": ["faults=random", "faults.error_rate=0.5", "faults.nan_rate=0"],
    "nan-0.3": ["faults=random", "faults.error_rate=0", "faults.nan_rate=0.3"],
    "dropout-0.5": ["availability=dropout", "availability.p=0.5"],
    "attack-0.3": ["attack=scale", "attack.fraction=0.3"],
}
EXECUTORS = {"sequential": ["executor=sequential"], "processes": ["executor=processes", "executor.workers=2"]}
STOP_RULES = {"max_steps", "max_updates", "max_time", "target_accuracy"}


def _check_run(make_cfg, tmp_path: Path, server: str, fault: str, executor: str) -> dict:
    """Run one cell of the matrix and check what every run must satisfy; returns its summary."""
    # Execute
    cfg = make_cfg(f"server={server}", *FAULTS[fault], *EXECUTORS[executor], "server.max_arrivals_without_progress=200")
    try:
        returned = run(cfg)
        raised = None
    except RunFailed as error:
        returned, raised = None, error
    out = Path(cfg.output_dir)
    summary = json.loads((out / "summary.json").read_text())

    # Assert: the status is honest
    if raised is None:
        assert returned["status"] == summary["status"]
        assert summary["status"] == "completed" and summary["stop_reason"] in STOP_RULES
        assert summary["stop_reason"] != "max_steps" or summary["steps"] == cfg.server.max_steps
    else:
        assert summary["status"] == "failed" and summary["stop_reason"] == str(raised)
        assert summary["steps"] < cfg.server.max_steps
    # every dispatched job is in exactly one place
    assert summary["accounting"]["balanced"], summary["accounting"]
    # updates.csv agrees with summary.json
    with (out / "updates.csv").open(newline="") as handle:
        statuses = Counter(row["status"] for row in csv.DictReader(handle))
    rejected = {k: v for k, v in summary["rejected"].items() if k != "non_finite_aggregate"}  # those rows arrived as accepted
    assert statuses["accepted"] == summary["accepted"]
    assert statuses["failed"] == summary["failed"] and statuses["retried"] == summary["retries"]
    assert statuses["dropped"] == summary["dropped"]
    assert {k: statuses[k] for k in rejected} == rejected
    assert sum(statuses.values()) - statuses["dropped"] - statuses["retried"] == summary["client_updates"]
    assert set(statuses) <= {"accepted", "failed", "retried", "dropped", *rejected}
    return summary


@pytest.mark.parametrize(
    ("server", "fault"),
    [("fedasync", "error-0.5"), ("fedbuff", "nan-0.3"), ("fedavg", "dropout-0.5"), ("fedat", "attack-0.3")],
)
def test_one_cell_per_fault_ends_honestly_with_balanced_books(make_cfg, tmp_path, server, fault):
    _check_run(make_cfg, tmp_path, server, fault, "sequential")


@pytest.mark.slow
@pytest.mark.parametrize("executor", list(EXECUTORS))
@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("server", SERVERS)
def test_the_fault_matrix_ends_honestly_with_balanced_books(make_cfg, tmp_path, server, fault, executor):
    _check_run(make_cfg, tmp_path, server, fault, executor)
