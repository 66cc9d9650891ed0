"""AsyncFedED: each arriving delta is applied with a weight set by how far the model has moved.

Wang, Yang, He, Shi, Chen. "AsyncFedED: Asynchronous Federated Learning with Euclidean
Distance based Adaptive Weight Aggregation", 2022, https://arxiv.org/abs/2205.13797,
Section 3. Client i trained from the stale global model x_{t-τ} and sends Δ_i (trained −
base). At global version t the server measures its staleness as a Euclidean distance
relative to the update's size and sets the update's global learning rate from it:

    γ_i(t) = ‖x_t − x_{t-τ}‖ / ‖Δ_i‖
    η_{g,i}(t) = λ / (γ_i(t) + ε)
    x_{t+1} = x_t + η_{g,i}(t) Δ_i

A fresh update (x_t = x_{t-τ}) gets the largest weight λ/ε. Norms are over the flat
vector (parameters and floating buffers); a zero delta changes nothing and is skipped.
The paper also adapts the client's number of local epochs from γ_i(t) (more when its
updates arrive fresh, fewer when stale, around a target staleness); that client side is not
modelled here: clients train ``client.epochs`` epochs. Each update makes one new global
version; if the loop hands over several (a flush), they are applied one after the other,
each measured against the model as it stands.

The config key of λ is ``lam`` (``lambda`` is a Python keyword).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_asyncfl.aggregators.base import AsyncAggregator
from lightning_asyncfl.errors import checking, positive, validate
from lightning_asyncfl.state import ClientUpdate, ModelState


def euclidean_staleness(x: Tensor, x_stale: Tensor, delta: Tensor) -> float:
    """γ = ‖x_t − x_{t-τ}‖ / ‖Δ‖ (infinite for a zero delta)."""
    delta_norm = float(torch.linalg.vector_norm(delta))
    distance = float(torch.linalg.vector_norm(x - x_stale))
    return distance / delta_norm if delta_norm > 0 else float("inf")


def asyncfeded_weight(gamma: float, lam: float, epsilon: float) -> float:
    """η_g = λ / (γ + ε) (0 for an infinite γ)."""
    return lam / (gamma + epsilon)


class AsyncFedED(AsyncAggregator):
    """AsyncFedED's server: one new version per update, weighted by λ / (γ + ε).

    Args:
        lam: λ > 0 (config key ``lam``).
        epsilon: ε > 0; a fresh update is applied with weight λ / ε.
    """

    def __init__(self, *, lam: float = 0.5, epsilon: float = 1.0) -> None:
        super().__init__(buffer_size=1)
        with checking() as check:
            validate(check, positive, "lam", lam)
            validate(check, positive, "epsilon", epsilon)
        self.lam, self.epsilon = float(lam), float(epsilon)

    def weight(self, global_flat: Tensor, update: ClientUpdate) -> float:
        """η_{g,i}(t) for ``update`` against the global model ``global_flat``."""
        gamma = euclidean_staleness(global_flat, update.base.flat.to(global_flat), update.delta.to(global_flat))
        return asyncfeded_weight(gamma, self.lam, self.epsilon)

    def aggregate(self, global_state: ModelState, updates: Sequence[ClientUpdate], version: int) -> ModelState:
        flat = global_state.flat
        for update in updates:
            weight = self.weight(flat, update)
            if weight > 0:
                flat = flat.add(update.delta.to(flat), alpha=weight)
        return global_state.with_flat(flat)

    def __repr__(self) -> str:
        return f"AsyncFedED(lam={self.lam}, epsilon={self.epsilon})"
