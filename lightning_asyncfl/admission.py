"""Admission: what an arrived update must pass before it enters the buffer.

The attack (malicious clients, simulated) is applied first, as a server would receive the
update; then the update's tensors are checked against the global model (names, shapes,
dtype, finite values), the scheduler says whether its round still takes it, and the
staleness limit drops what is staler than ``max_staleness``. A rejected update is never
applied; the loop counts it under its reason.
"""

from __future__ import annotations

import torch

from lightning_asyncfl.attacks import Attack
from lightning_asyncfl.schedulers.base import Scheduler
from lightning_asyncfl.state import ClientUpdate, Job, ModelState

#: why an update is rejected (``rejected`` counts in summary.json), besides ``failed`` jobs
REASONS = ("shape", "dtype", "non_finite", "late", "stale")


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether every value of ``tensor`` is finite.

    A NaN or an infinity makes the sum non-finite, so a finite sum (one reduction, no
    temporary the size of the model) proves it; only a non-finite sum, which an overflow
    of finite values can also give, takes the exact element-wise check.
    """
    if tensor.numel() == 0 or bool(torch.isfinite(tensor.sum())):
        return True
    return bool(torch.isfinite(tensor).all())


class Admission:
    """The checks between an arrived job and the buffer.

    Args:
        attack: malicious clients (applied before the checks).
        scheduler: says whether a job's round still accepts its update.
        max_staleness: drop updates staler than this (None: keep all).
    """

    def __init__(self, *, attack: Attack, scheduler: Scheduler, max_staleness: int | None) -> None:
        self.attack, self.scheduler, self.max_staleness = attack, scheduler, max_staleness

    def received(self, job: Job, base: ModelState, trained: ModelState) -> tuple[ModelState, bool]:
        """What the server receives for ``job``: ``trained``, or the attack's corruption of it; and whether it was attacked."""
        if job.client_id in self.attack.malicious:
            return self.attack.apply(job, base, trained), True
        return trained, False

    def problem(self, update: ClientUpdate, global_state: ModelState, now: float) -> tuple[str, str] | None:
        """``(reason, detail)`` if ``update`` must be rejected, else None."""
        state = update.state
        if state.layout != global_state.layout:
            return "shape", "the update's tensors do not match the global model's names and shapes"
        if state.flat.shape != global_state.flat.shape:  # the layout may be right and the vector not
            return "shape", f"the update's flat vector has {state.flat.numel()} values, the global model's {global_state.flat.numel()}"
        extras = global_state.extras
        if {k: v.shape for k, v in state.extras.items()} != {k: v.shape for k, v in extras.items()}:
            return "shape", "the update's integer buffers do not match the global model's names and shapes"
        if state.flat.dtype != global_state.flat.dtype:
            return "dtype", f"the update's weights are {state.flat.dtype}, the global model's {global_state.flat.dtype}"
        if not all_finite(state.flat):
            return "non_finite", "the update holds NaN or infinite values"
        for name, tensor in state.side.items():
            if not all_finite(tensor):
                return "non_finite", f"the update's side tensor {name!r} holds NaN or infinite values"
        if not self.scheduler.accepts(update, now):
            return "late", "the job's round closed before its update arrived (over-selection or deadline)"
        if self.max_staleness is not None and update.staleness > self.max_staleness:
            return "stale", f"staleness {update.staleness} > max_staleness {self.max_staleness}"
        return None
