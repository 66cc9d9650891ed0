"""RunState: everything a run has done so far, and its checkpoint (``state_dict``/``load_state_dict``).

The loop changes a :class:`RunState` event by event: the global model and its version,
the virtual time, the buffer, the jobs in flight (:class:`~lightning_asyncfl.inflight.InFlight`),
the idle clients, the counters and the evaluation rows. The run state turns all of it,
with the plug-ins' own states, into tensors and plain values through the ``to_plain``/
``from_plain`` of :class:`~lightning_asyncfl.state.Job`, :class:`~lightning_asyncfl.state.ModelState`
and :class:`~lightning_asyncfl.state.ClientUpdate`: a checkpoint loads with
``torch.load(weights_only=True)``. Model versions are stored once each, by version.

Checkpoints written before some keys existed (``traffic``, ``empty_rounds``,
``last_client_eval``, ``progress``) still load: those keys take their start values.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from lightning_asyncfl.buffer import UpdateBuffer
from lightning_asyncfl.inflight import InFlight
from lightning_asyncfl.state import ClientUpdate, Layout, ModelState


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """A numpy generator's state as plain values."""
    return rng.bit_generator.state


def set_rng_state(rng: np.random.Generator, state: Mapping[str, Any]) -> None:
    """Restore :func:`rng_state` into ``rng``."""
    rng.bit_generator.state = dict(state)


class RunState:
    """The run so far.

    Args:
        global_state: the global model at version 0.
        num_clients: number of clients (all idle at the start).
        seed: the run's seed (a checkpoint of another seed does not load).
        ordered: the clock handles events in (time, job id) order (the virtual clock).
    """

    def __init__(self, global_state: ModelState, *, num_clients: int, seed: int, ordered: bool = True) -> None:
        self.seed, self.num_clients = seed, num_clients
        self.global_state = global_state
        self.version = 0
        self.now = 0.0
        self.buffer = UpdateBuffer()
        self.inflight = InFlight(ordered=ordered)
        self.idle = list(range(num_clients))  # kept sorted: O(log N) search per change, no sort per event
        self.client_states: dict[int, dict[str, torch.Tensor]] = {}  # each client's own tensors (SCAFFOLD's c_i)
        self.counts: Counter[str] = Counter()
        self.traffic: Counter[str] = Counter()  # bytes sent each way, compute and communication seconds of arrived jobs
        self.rejected: Counter[str] = Counter()
        self.history: list[dict[str, float]] = []
        self.next_job = 0
        self.last_eval = -1
        self.last_client_eval = -1
        self.empty_rounds = 0
        self.idle_wakeups = 0
        self.dispatch_pending = True  # False right after a dispatch, until the next event
        self.futile = 0  # arrivals since the last new global version that brought nothing (the no-progress guard)
        self.progress_time = 0.0  # virtual time of the last new global version
        self.last_problem = ""  # what the last futile arrival was, for the guard's message

    # -- checkpoints ---------------------------------------------------------------
    def state_dict(self, *, rngs: Mapping[str, np.random.Generator], wall_time: float, plugins: Mapping[str, Any], callbacks: Sequence[Any]) -> dict[str, Any]:
        """The whole run as tensors and plain values, with the random streams ``rngs``
        (``rng``, ``delay_rng``), the plug-ins' states (``aggregator``, ``scheduler``,
        ``availability``) and the callbacks'."""
        states = dict(self.inflight.snapshots.items())
        for update in self.buffer:
            states.setdefault(update.base_version, update.base)
        return {
            "seed": self.seed,
            "num_clients": self.num_clients,
            "layout": self.global_state.layout.to_plain(),
            "version": self.version,
            "now": self.now,
            "wall_time": wall_time,
            "global": self.global_state.to_plain(layout=False),
            "states": {v: st.to_plain(layout=False) for v, st in sorted(states.items())},
            **self.inflight.to_plain(),  # holds, jobs, arrivals, dropping
            "idle": list(self.idle),
            "buffer": [update.to_plain() for update in self.buffer],
            "client_states": {c: {k: t.detach().cpu() for k, t in st.items()} for c, st in sorted(self.client_states.items())},
            **{name: rng_state(rng) for name, rng in rngs.items()},
            **{name: plugin.state_dict() for name, plugin in plugins.items()},
            "callbacks": {f"{i}:{type(cb).__name__}": cb.state_dict() for i, cb in enumerate(callbacks)},
            "counts": dict(self.counts),
            "traffic": dict(self.traffic),
            "empty_rounds": self.empty_rounds,
            "rejected": dict(self.rejected),
            "history": [dict(row) for row in self.history],
            "next_job": self.next_job,
            "last_eval": self.last_eval,
            "last_client_eval": self.last_client_eval,
            "peak_snapshots": self.inflight.peak_snapshots,
            "idle_wakeups": self.idle_wakeups,
            "dispatch_pending": self.dispatch_pending,
            "progress": {"futile": self.futile, "since": self.progress_time, "last": self.last_problem},
        }

    def load_state_dict(self, state: Mapping[str, Any], *, rngs: Mapping[str, np.random.Generator], plugins: Mapping[str, Any], callbacks: Sequence[Any]) -> float:
        """Restore :meth:`state_dict` (a run built from the same config, set up, not started); returns the wall time it had run."""
        if state["seed"] != self.seed or state["num_clients"] != self.num_clients:
            raise ValueError(
                f"the checkpoint is of a run with seed {state['seed']} and {state['num_clients']} clients, "
                f"this loop has seed {self.seed} and {self.num_clients} clients"
            )
        layout = Layout.from_plain(state["layout"])
        if layout != self.global_state.layout:
            raise ValueError("the checkpoint's model does not have this model's tensors (names and shapes differ)")
        device = self.global_state.flat.device
        self.global_state = ModelState.from_plain(state["global"], layout, device)
        self.version, self.now = int(state["version"]), float(state["now"])
        states = {int(v): ModelState.from_plain(p, layout, device) for v, p in state["states"].items()}
        states[self.version] = self.global_state  # one object, as in the uninterrupted run
        self.inflight.load_plain(state, states, state["peak_snapshots"])
        self.idle = [int(c) for c in state["idle"]]
        self.buffer = UpdateBuffer()
        for item in state["buffer"]:
            self.buffer.push(ClientUpdate.from_plain(item, base=states[int(item["job"]["base_version"])]))
        self.client_states = {int(c): dict(st) for c, st in state["client_states"].items()}
        for name, rng in rngs.items():
            set_rng_state(rng, state[name])
        for name, plugin in plugins.items():
            plugin.load_state_dict(state[name])
        saved = state["callbacks"]
        for i, cb in enumerate(callbacks):
            key = f"{i}:{type(cb).__name__}"
            if key in saved:
                cb.load_state_dict(saved[key])
        self.counts = Counter(state["counts"])
        self.traffic = Counter(state.get("traffic", {}))  # absent in checkpoints written before the system model
        self.empty_rounds = int(state.get("empty_rounds", 0))
        self.rejected = Counter(state["rejected"])
        self.history = [dict(row) for row in state["history"]]
        self.next_job, self.last_eval = int(state["next_job"]), int(state["last_eval"])
        self.last_client_eval = int(state.get("last_client_eval", -1))
        self.idle_wakeups = int(state["idle_wakeups"])
        self.dispatch_pending = bool(state["dispatch_pending"])
        progress = state.get("progress", {})  # checkpoints from before the no-progress guard have none
        self.futile, self.progress_time = int(progress.get("futile", 0)), float(progress.get("since", self.now))
        self.last_problem = str(progress.get("last", ""))
        return float(state["wall_time"])

    # -- results -------------------------------------------------------------------
    def summary(self, *, status: str, stop_reason: str | None, wall_time: float, executor_start_time: float,
                last_checkpoint: Any, time_to_accuracy: Sequence[float]) -> dict[str, Any]:  # fmt: skip
        """Counts, times and metrics so far, as plain values (``summary.json``), with what the loop knows (status, wall times, last checkpoint)."""
        final = self.history[-1] if self.history else {}
        accuracies = [row["test_accuracy"] for row in self.history if "test_accuracy" in row]
        counts, in_flight = self.counts, len(self.inflight)
        outcome = {
            "applied": counts["applied"], "rejected": sum(self.rejected.values()), "failed": counts["failed"],
            "dropped": counts["dropped"], "buffered": len(self.buffer), "in_flight": in_flight,
        }  # fmt: skip
        return {
            "status": status,
            "stop_reason": stop_reason,
            "steps": self.version,
            "client_updates": counts["arrived"],
            "dispatched": counts["dispatched"],
            "accepted": counts["accepted"],
            "applied": counts["applied"],
            "failed": counts["failed"],
            "retries": counts["retries"],
            "dropped": counts["dropped"],
            "attacked": counts["attacked"],
            "rejected": dict(sorted(self.rejected.items())),
            "rejected_total": sum(self.rejected.values()),
            "in_flight": in_flight,
            "buffered": len(self.buffer),
            # every dispatched job ends in exactly one of these (see docs/outputs.md)
            "accounting": {"dispatched": counts["dispatched"], **outcome, "balanced": counts["dispatched"] == sum(outcome.values())},
            "virtual_time": self.now,
            "wall_time": wall_time,
            "executor_start_time": executor_start_time,
            "final_accuracy": final.get("test_accuracy"),
            "final_loss": final.get("test_loss"),
            "best_accuracy": max(accuracies) if accuracies else None,
            "peak_snapshots": self.inflight.peak_snapshots,
            **self._system_summary(time_to_accuracy),
            "last_checkpoint": None if last_checkpoint is None else str(last_checkpoint),
            "final_metrics": {k: v for k, v in final.items() if k.startswith("test_")},
        }

    def _system_summary(self, time_to_accuracy: Sequence[float]) -> dict[str, Any]:
        """Bytes sent, mean compute and communication seconds per arrived job, and time to each target accuracy."""
        uploads = self.traffic["uploads"]
        reached: dict[str, dict[str, float] | None] = {}
        for target in time_to_accuracy:
            row = next((r for r in self.history if r.get("test_accuracy", -math.inf) >= target), None)
            reached[f"{target:g}"] = None if row is None else {
                "virtual_time": row["virtual_time"], "client_updates": row["client_updates"], "version": row["version"]}  # fmt: skip
        return {
            "bytes_down": int(self.traffic["download_bytes"]),
            "bytes_up": int(self.traffic["upload_bytes"]),
            "mean_compute_time": self.traffic["compute_time"] / uploads if uploads else None,
            "mean_communication_time": self.traffic["communication_time"] / uploads if uploads else None,
            "time_to_accuracy": reached,
        }
