"""FedAsync: mix each arriving client model into the global model, weighted by staleness.

Xie, Koyejo, Gupta. "Asynchronous Federated Optimization", OPT 2020,
https://arxiv.org/abs/1903.03934, Algorithm 1 and Section 5.2. At global version t an
update x_new trained from version τ is mixed in with

    α_t = α · s(t - τ)
    x_t = (1 - α_t) · x_{t-1} + α_t · x_new

with s the staleness function (constant, polynomial or hinge, see :mod:`.staleness`).
Each update makes one new global version; if the loop hands over several (a flush), they
are mixed in one after the other in arrival order.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from lightning_asyncfl.aggregators.base import AsyncAggregator
from lightning_asyncfl.aggregators.staleness import make_staleness
from lightning_asyncfl.errors import checking, probability, validate
from lightning_asyncfl.state import ClientUpdate, ModelState


def fedasync_mix(global_flat: Tensor, client_flat: Tensor, alpha_t: float) -> Tensor:
    """x_t = (1 - α_t) x_{t-1} + α_t x_new, on flat vectors."""
    return (global_flat * (1.0 - alpha_t)).add_(client_flat, alpha=alpha_t)


class FedAsync(AsyncAggregator):
    """FedAsync with mixing weight ``alpha`` and a staleness function.

    Args:
        alpha: mixing hyperparameter α, in (0, 1].
        staleness: ``constant``, ``polynomial`` or ``hinge``.
        a: exponent of ``polynomial``, slope of ``hinge``; >= 0.
        b: threshold of ``hinge``; >= 0.
    """

    def __init__(self, *, alpha: float = 0.6, staleness: str = "polynomial", a: float = 0.5, b: float = 4.0) -> None:
        super().__init__(buffer_size=1)
        with checking() as check:
            validate(check, probability, "alpha", alpha, open_low=True)
            self.staleness = make_staleness(staleness, a=a, b=b)
        self.alpha = float(alpha)

    def alpha_t(self, staleness: int) -> float:
        """α_t = α · s(t - τ)."""
        return self.alpha * self.staleness.weight(staleness)

    def aggregate(self, global_state: ModelState, updates: Sequence[ClientUpdate], version: int) -> ModelState:
        flat = global_state.flat
        for update in updates:
            flat = fedasync_mix(flat, update.state.flat, self.alpha_t(update.staleness))
        return global_state.with_flat(flat)

    def __repr__(self) -> str:
        return f"FedAsync(alpha={self.alpha}, staleness={self.staleness!r})"
