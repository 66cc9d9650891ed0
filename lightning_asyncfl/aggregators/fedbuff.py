"""FedBuff: buffered asynchronous aggregation of staleness-weighted client deltas.

Nguyen, Malik, Zhan, Yousefpour, Rabbat, Malek, Huba. "Federated Learning with Buffered
Asynchronous Aggregation", AISTATS 2022, https://arxiv.org/abs/2106.06639, Algorithm 1.
Clients send Δ_i = y_Q − y_0 (trained minus base; the paper writes the opposite sign and
subtracts); the server accumulates staleness-weighted deltas until it holds K of them:

    Δ̄ = (1/K) Σ_{i=1..K} s(τ_i) Δ_i
    w ← w + η_g Δ̄

with server learning rate η_g and staleness weight s (the paper uses s(τ) = 1/√(1+τ),
which is ``staleness=polynomial, a=0.5``). When the loop flushes a partial buffer at the
end of the work, K is the number of updates actually buffered.

Under attack, the mean can be replaced by a robust combination of the weighted deltas
(``rule``: coordinate-wise median, trimmed mean, Krum / multi-Krum, see :mod:`.robust`),
and every delta can be clipped to a norm first (``clip_norm``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_asyncfl.aggregators.base import AsyncAggregator
from lightning_asyncfl.aggregators.ops import staleness_weighted_mean
from lightning_asyncfl.aggregators.robust import check_robust, robust_combine
from lightning_asyncfl.aggregators.staleness import make_staleness
from lightning_asyncfl.errors import checking
from lightning_asyncfl.state import ClientUpdate, ModelState


def fedbuff_step(global_flat: Tensor, deltas: Sequence[Tensor], weights: Sequence[float], server_lr: float) -> Tensor:
    """w + η_g · (1/K) Σ s_i Δ_i, on flat vectors."""
    return global_flat.add(staleness_weighted_mean(deltas, weights), alpha=server_lr)


class FedBuff(AsyncAggregator):
    """FedBuff with buffer size K, server learning rate η_g and a staleness weight.

    Args:
        buffer_size: K, the number of updates per aggregation.
        server_lr: η_g > 0.
        staleness: ``constant``, ``polynomial`` or ``hinge``.
        a: exponent of ``polynomial``, slope of ``hinge``; >= 0.
        b: threshold of ``hinge``; >= 0.
        rule: how the K weighted deltas are combined: ``mean`` (the paper), ``median``,
            ``trimmed_mean`` or ``krum``.
        trim: β of ``trimmed_mean``, in [0, 0.5): the share dropped at each end.
        krum_f: f of ``krum``, the number of attackers tolerated (K must exceed f + 2; a
            flushed partial buffer too small for Krum takes the median).
        krum_m: m of multi-Krum, the number of lowest-scored deltas averaged (1: Krum).
        clip_norm: scale every delta down to this norm first (null: no clipping).
    """

    def __init__(
        self,
        *,
        buffer_size: int = 10,
        server_lr: float = 1.0,
        staleness: str = "polynomial",
        a: float = 0.5,
        b: float = 4.0,
        rule: str = "mean",
        trim: float = 0.2,
        krum_f: int = 1,
        krum_m: int = 1,
        clip_norm: float | None = None,
    ) -> None:
        with checking() as check:
            super().__init__(buffer_size=buffer_size)
            check(server_lr > 0, "server_lr", server_lr, "> 0")
            check_robust(check, rule=rule, trim=trim, krum_f=krum_f, krum_m=krum_m, clip_norm=clip_norm, buffer_size=buffer_size)
            self.staleness = make_staleness(staleness, a=a, b=b)
        self.server_lr = float(server_lr)
        self.rule, self.trim, self.krum_f, self.krum_m = rule, float(trim), krum_f, krum_m
        self.clip_norm = None if clip_norm is None else float(clip_norm)

    def aggregate(self, global_state: ModelState, updates: Sequence[ClientUpdate], version: int) -> ModelState:
        weights = [self.staleness.weight(u.staleness) for u in updates]
        if self.rule == "mean" and self.clip_norm is None:
            flat = fedbuff_step(global_state.flat, [u.delta for u in updates], weights, self.server_lr)
            return global_state.with_flat(flat)
        deltas = torch.stack([u.delta * w for u, w in zip(updates, weights)])
        combined = robust_combine(deltas, rule=self.rule, trim=self.trim, krum_f=self.krum_f, krum_m=self.krum_m, clip_norm=self.clip_norm)
        return global_state.with_flat(global_state.flat.add(combined, alpha=self.server_lr))

    def __repr__(self) -> str:
        robust = "" if self.rule == "mean" and self.clip_norm is None else f", rule={self.rule!r}, clip_norm={self.clip_norm}"
        return f"FedBuff(buffer_size={self.buffer_size}, server_lr={self.server_lr}, staleness={self.staleness!r}{robust})"
