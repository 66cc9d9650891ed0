"""FedProx: a proximal term keeps local training near the global model it started from.

Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith. "Federated Optimization in Heterogeneous
Networks", MLSys 2020, https://arxiv.org/abs/1812.06127, Eq. (2). Client k minimises

    h_k(w; w^t) = F_k(w) + (μ/2) ||w − w^t||²

where w^t is the global model the job started from. The same regularised objective is
FedAsync's local objective (Xie et al. 2019, Option II, with ρ = μ).
"""

from __future__ import annotations

from torch import Tensor

from lightning_asyncfl.client_algorithms.base import ClientAlgorithm, LocalTraining
from lightning_asyncfl.errors import non_negative


def proximal_term(parameters: list[Tensor], anchors: list[Tensor], mu: float) -> Tensor:
    """(μ/2) Σ ||w − w^t||² over the parameter tensors."""
    return 0.5 * mu * sum(((p - a) ** 2).sum() for p, a in zip(parameters, anchors))


class FedProx(ClientAlgorithm):
    """Adds (μ/2) ||w − w^t||² to every step's loss.

    Args:
        mu: the proximal coefficient μ >= 0 (0 is plain local training).
    """

    def __init__(self, *, mu: float = 0.01) -> None:
        non_negative("mu", mu)
        self.mu = float(mu)

    def before_training(self, ctx: LocalTraining) -> None:
        self._anchors = ctx.base_parameters
        self._parameters = ctx.parameters

    def on_loss(self, ctx: LocalTraining, loss: Tensor) -> Tensor:
        if self.mu == 0:
            return loss
        return loss + proximal_term(self._parameters, self._anchors, self.mu)
