"""FedAvg: the sample-weighted average of the client models of a round.

McMahan, Moore, Ramage, Hampson, Agüera y Arcas. "Communication-Efficient Learning of
Deep Networks from Decentralized Data", AISTATS 2017, https://arxiv.org/abs/1602.05629,
Algorithm 1:

    w_{t+1} = Σ_k (n_k / n) w^k_{t+1},   n = Σ_k n_k

over the clients k of the round. With the round scheduler (``server=fedavg``) every
update of a round starts from the same global model, so this is synchronous FL; under
an asynchronous scheduler it averages whatever models are buffered, ignoring staleness.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from lightning_asyncfl.aggregators.base import AsyncAggregator
from lightning_asyncfl.aggregators.ops import normalized_weighted_sum
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
    """

    def __init__(self, *, clients_per_round: int = 10, weighted: bool = True) -> None:
        super().__init__(buffer_size=clients_per_round)
        self.weighted = bool(weighted)

    def aggregate(self, global_state: ModelState, updates: Sequence[ClientUpdate], version: int) -> ModelState:
        weights = [float(u.num_samples) if self.weighted else 1.0 for u in updates]
        return global_state.with_flat(weighted_average([u.state.flat for u in updates], weights))

    def __repr__(self) -> str:
        return f"FedAvg(clients_per_round={self.buffer_size}, weighted={self.weighted})"
