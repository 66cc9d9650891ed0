"""The run state saves and loads itself; the checkpoint format stays, and older checkpoints resume."""

from __future__ import annotations

import io

import torch

from lightning_asyncfl.aggregators import FedBuff
from lightning_asyncfl.delays import PerClientDelay
from lightning_asyncfl.snapshots import Snapshots
from tests.helpers import FirstIdle, make_loop

#: the keys of a checkpoint's run state, as written since the system model (the format before the loop was split)
FORMAT = [
    "seed", "num_clients", "layout", "version", "now", "wall_time", "global", "states", "holds", "jobs", "arrivals",
    "dropping", "idle", "buffer", "client_states", "rng", "delay_rng", "aggregator", "scheduler", "availability",
    "callbacks", "counts", "traffic", "empty_rounds", "rejected", "history", "next_job", "last_eval", "last_client_eval",
    "peak_snapshots", "idle_wakeups", "dispatch_pending", "progress",
]  # fmt: skip
#: keys that checkpoints written before the system model, per-client evaluation and the no-progress guard lack
ADDED_LATER = ["traffic", "empty_rounds", "last_client_eval", "progress"]


def _loop(max_steps: int):
    return make_loop(FedBuff(buffer_size=2), FirstIdle(3), PerClientDelay(values=[3.0, 1.0, 2.5]), max_steps=max_steps, eval_every=2)


def _weights_only(state: dict) -> dict:
    blob = io.BytesIO()
    torch.save(state, blob)
    blob.seek(0)
    return torch.load(blob, weights_only=True)


def test_the_checkpoint_format_stays():
    # Prepare
    loop = _loop(max_steps=3)

    # Execute
    loop.run()
    state = loop.state_dict()

    # Assert
    assert list(state) == FORMAT
    assert state["holds"] == {v: n for v, n in state["holds"].items() if n >= 1}
    assert [job["job_id"] for job in state["jobs"]] == sorted(job["job_id"] for job in state["jobs"])
    assert {"job", "state", "num_samples", "metrics", "staleness"} == (set(state["buffer"][0]) if state["buffer"] else {"job", "state", "num_samples", "metrics", "staleness"})


def test_a_checkpoint_of_the_older_format_resumes_to_the_uninterrupted_bytes():
    # Prepare: the uninterrupted run, and a run stopped at version 3 whose checkpoint lacks the keys added later
    whole = _loop(max_steps=8)
    whole.run()
    first = _loop(max_steps=3)
    first.run()
    old = {k: v for k, v in _weights_only(first.state_dict()).items() if k not in ADDED_LATER}

    # Execute
    resumed = _loop(max_steps=8)
    summary = resumed.run(resume=old)

    # Assert
    assert summary["status"] == "completed" and summary["steps"] == 8
    assert torch.equal(resumed.global_state.flat, whole.global_state.flat)
    assert resumed.history[-1]["test_accuracy"] == whole.history[-1]["test_accuracy"]


def test_snapshots_count_users_and_forget_a_key_at_its_last_release():
    # Prepare
    snapshots: Snapshots[int, str] = Snapshots()
    made = []

    # Execute
    first = snapshots.hold(0, lambda: made.append(0) or "v0")
    again = snapshots.hold(0, lambda: made.append(1) or "other")
    snapshots.hold(1, lambda: "v1")
    released = snapshots.release(0)

    # Assert
    assert first == again == released == "v0" and made == [0]
    assert snapshots.counts() == {0: 1, 1: 1} and snapshots == {0: "v0", 1: "v1"}
    snapshots.release(0)
    assert 0 not in snapshots and len(snapshots) == 1 and snapshots.count(0) == 0
