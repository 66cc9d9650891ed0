"""FedAvg: the sample-weighted average of the client models of a round.

McMahan, Moore, Ramage, Hampson, Agüera y Arcas. "Communication-Efficient Learning of
Deep Networks from Decentralized Data", AISTATS 2017, https://arxiv.org/abs/1602.05629,
Algorithm 1:

    w_{t+1} = Σ_k (n_k / n) w^k_{t+1},   n = Σ_k n_k

over the clients k of the round. With the round scheduler (``server=fedavg``) every
update of a round starts from the same global model, so this is synchronous FL; under
an asynchronous scheduler it averages whatever models are buffered, ignoring staleness.

A robust ``reducer`` (median, trimmed mean, Krum; see :mod:`.reducers`) replaces the
average: w_{t+1} = w_t + reduce(Δ_k) with Δ_k = w^k_{t+1} − (the model client k started
from). In rounds every client starts from w_t, so ``reducer=median`` is the coordinate-wise
median of the client models (Flower's FedMedian).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from lightning_asyncfl.aggregators.base import AsyncAggregator
from lightning_asyncfl.aggregators.ops import normalized_weighted_sum
from lightning_asyncfl.aggregators.reducers import Reducer, build_reducer
from lightning_asyncfl.errors import checking
from lightning_asyncfl.state import ClientUpdate, ModelState


def weighted_average(flats: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """Σ_k (w_k / Σ w) x_k, on flat vectors."""
    return normalized_weighted_sum(flats, weights)


class FedAvg(AsyncAggregator):
    """FedAvg over ``clients_per_round`` updates.

    Args:
        clients_per_round: aggregate when this many updates are buffered (the round size m).
        weighted: weight clients by their number of samples n_k (the paper); False gives
            the plain mean.
        reducer: ``mean`` (the paper), or a robust reducer of the deltas (``median``,
            ``trimmed_mean``, ``krum``, with options as ``{name: ..., ...}``).
    """

    def __init__(self, *, clients_per_round: int = 10, weighted: bool = True, reducer: str | Mapping[str, Any] | Reducer = "mean") -> None:
        with checking() as check:
            super().__init__(buffer_size=clients_per_round)
            self.reducer = build_reducer(check, reducer=reducer, buffer_size=clients_per_round, owner="FedAvg")
        self.weighted = bool(weighted)

    def aggregate(self, global_state: ModelState, updates: Sequence[ClientUpdate], version: int) -> ModelState:
        weights = [float(u.num_samples) if self.weighted else 1.0 for u in updates]
        if self.reducer.is_plain_mean:
            return global_state.with_flat(weighted_average([u.state.flat for u in updates], weights))
        x = global_state.flat
        combined = self.reducer([u.delta.to(x) for u in updates], [1.0] * len(updates), weights)
        return global_state.with_flat(x.add(combined))

    def __repr__(self) -> str:
        robust = "" if self.reducer.is_plain_mean else f", reducer={self.reducer!r}"
        return f"FedAvg(clients_per_round={self.buffer_size}, weighted={self.weighted}{robust})"
