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
s(τ_i) Δ_i (``reducer``: coordinate-wise median, trimmed mean, Krum / multi-Krum, each
optionally after clipping every delta to a norm; see :mod:`.reducers`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from lightning_asyncfl.aggregators.base import AsyncAggregator
from lightning_asyncfl.aggregators.ops import staleness_weighted_mean
from lightning_asyncfl.aggregators.reducers import Reducer, build_reducer
from lightning_asyncfl.aggregators.staleness import make_staleness
from lightning_asyncfl.errors import checking, positive, validate
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
        reducer: how the K weighted deltas are combined: ``mean`` (the paper), ``median``,
            ``trimmed_mean`` or ``krum``, with options as ``{name: ..., ...}``, or a
            :class:`~.reducers.Reducer` (see :mod:`.reducers`).
        rule, trim, krum_f, krum_m, clip_norm: deprecated spellings of ``reducer``.
    """

    def __init__(
        self,
        *,
        buffer_size: int = 10,
        server_lr: float = 1.0,
        staleness: str = "polynomial",
        a: float = 0.5,
        b: float = 4.0,
        reducer: str | Mapping[str, Any] | Reducer = "mean",
        rule: str | None = None,
        trim: float | None = None,
        krum_f: int | None = None,
        krum_m: int | None = None,
        clip_norm: float | None = None,
    ) -> None:
        with checking() as check:
            super().__init__(buffer_size=buffer_size)
            validate(check, positive, "server_lr", server_lr)
            self.reducer = build_reducer(check, reducer=reducer, buffer_size=buffer_size, owner="FedBuff", rule=rule, trim=trim,
                                         krum_f=krum_f, krum_m=krum_m, clip_norm=clip_norm)  # fmt: skip
            self.staleness = make_staleness(staleness, a=a, b=b)
        self.server_lr = float(server_lr)
        self.legacy_rule = None if rule is None and trim is None and krum_f is None and krum_m is None else (rule or "mean")

    def aggregate(self, global_state: ModelState, updates: Sequence[ClientUpdate], version: int) -> ModelState:
        weights = [self.staleness.weight(u.staleness) for u in updates]
        if self.reducer.is_plain_mean:
            return global_state.with_flat(fedbuff_step(global_state.flat, [u.delta for u in updates], weights, self.server_lr))
        combined = self.reducer([u.delta for u in updates], weights)
        return global_state.with_flat(global_state.flat.add(combined, alpha=self.server_lr))

    def __repr__(self) -> str:
        robust = "" if self.reducer.is_plain_mean else f", reducer={self.reducer!r}"
        return f"FedBuff(buffer_size={self.buffer_size}, server_lr={self.server_lr}, staleness={self.staleness!r}{robust})"
