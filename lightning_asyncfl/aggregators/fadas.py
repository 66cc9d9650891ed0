"""FADAS: buffered asynchronous deltas fed to an AMSGrad server, with a delay-adaptive step.

Wang, Wang, Lu, Chen. "FADAS: Towards Federated Adaptive Asynchronous Optimization",
ICML 2024, https://arxiv.org/abs/2407.18365, Algorithm 1 and its delay-adaptive learning
rate. With the buffer M_t of M deltas Δ^i_t (trained − base) and their largest staleness
τ^max_t = max_{i∈M_t} τ^i_t:

    Δ_t = (1/M) Σ_{i∈M_t} Δ^i_t
    m_t = β_1 m_{t-1} + (1 − β_1) Δ_t
    v_t = β_2 v_{t-1} + (1 − β_2) Δ_t²
    v̂_t = max(v̂_{t-1}, v_t)
    η_t = η if τ^max_t ≤ τ_c,  min(η, 1/τ^max_t) if τ^max_t > τ_c    (delay_adaptive)
    x_{t+1} = x_t + η_t m_t / (√v̂_t + ε)

with m_0 = v_0 = v̂_0 = 0 and no bias correction; ``delay_adaptive=false`` keeps η_t = η
(plain FADAS). The authors' code (github.com/yujiaw98/FADAS) differs from these equations:
it adds Adam's bias corrections and scales the step by 1/τ^max_t, i.e. η/τ^max_t, above τ_c.
When the loop flushes a partial buffer, M is the number of updates actually buffered.
The state (m, v, v̂) is created at the first aggregation, on the global model's device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_asyncfl.aggregators.base import AsyncAggregator
from lightning_asyncfl.aggregators.ops import weighted_sum
from lightning_asyncfl.aggregators.server_state import FlatState
from lightning_asyncfl.errors import checking
from lightning_asyncfl.state import ClientUpdate, ModelState

STATE_KEYS = ("m", "v", "v_hat")


def delay_adaptive_lr(server_lr: float, tau_max: int, tau_c: float) -> float:
    """η_t = η if τ^max_t ≤ τ_c, else min(η, 1/τ^max_t)."""
    return server_lr if tau_max <= tau_c else min(server_lr, 1.0 / tau_max)


def fadas_step(x: Tensor, m: Tensor, v: Tensor, v_hat: Tensor, delta: Tensor, lr: float, beta1: float, beta2: float,
               epsilon: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One AMSGrad step on the mean delta Δ_t with step size η_t = ``lr``: (x_{t+1}, m_t, v_t, v̂_t), new tensors."""
    m = (m * beta1).add_(delta, alpha=1.0 - beta1)
    v = (v * beta2).addcmul_(delta, delta, value=1.0 - beta2)
    v_hat = torch.maximum(v_hat, v)
    return x.addcdiv(m, v_hat.sqrt().add_(epsilon), value=lr), m, v, v_hat


class FADAS(AsyncAggregator):
    """FADAS with buffer size M, AMSGrad hyperparameters and the delay-adaptive learning rate.

    Args:
        buffer_size: M, the number of updates per aggregation.
        server_lr: η > 0, the global learning rate.
        beta1: β_1 in [0, 1).
        beta2: β_2 in [0, 1).
        epsilon: ε > 0.
        delay_adaptive: use η_t above (False: η_t = η).
        tau_c: τ_c >= 0, the delay threshold above which η_t shrinks.
    """

    def __init__(self, *, buffer_size: int = 10, server_lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99,
                 epsilon: float = 1e-8, delay_adaptive: bool = True, tau_c: float = 1.0) -> None:
        with checking() as check:
            check(isinstance(buffer_size, int) and buffer_size >= 1, "buffer_size", buffer_size, "an integer >= 1")
            check(server_lr > 0, "server_lr", server_lr, "> 0")
            check(0 <= beta1 < 1, "beta1", beta1, "in [0, 1)")
            check(0 <= beta2 < 1, "beta2", beta2, "in [0, 1)")
            check(epsilon > 0, "epsilon", epsilon, "> 0")
            check(tau_c >= 0, "tau_c", tau_c, ">= 0")
        super().__init__(buffer_size=buffer_size)
        self.server_lr, self.beta1, self.beta2, self.epsilon = float(server_lr), float(beta1), float(beta2), float(epsilon)
        self.delay_adaptive, self.tau_c = bool(delay_adaptive), float(tau_c)
        self._state = FlatState("FADAS", STATE_KEYS)

    def learning_rate(self, tau_max: int) -> float:
        """η_t for a buffer whose largest staleness is ``tau_max``."""
        return delay_adaptive_lr(self.server_lr, tau_max, self.tau_c) if self.delay_adaptive else self.server_lr

    def aggregate(self, global_state: ModelState, updates: Sequence[ClientUpdate], version: int) -> ModelState:
        x = global_state.flat
        delta = weighted_sum([u.delta.to(x) for u in updates]).div_(len(updates))
        state = self._state.get(x, lambda like: {k: torch.zeros_like(like) for k in STATE_KEYS})
        lr = self.learning_rate(max(u.staleness for u in updates))
        flat, *moments = fadas_step(x, state["m"], state["v"], state["v_hat"], delta, lr, self.beta1, self.beta2, self.epsilon)
        self._state.set(dict(zip(STATE_KEYS, moments)))
        return global_state.with_flat(flat)

    def state_dict(self) -> dict[str, Any]:
        """``{"m": m_t, "v": v_t, "v_hat": v̂_t}`` (``{}`` before the first aggregation)."""
        return self._state.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._state.load_state_dict(state)

    def __repr__(self) -> str:
        return (f"FADAS(buffer_size={self.buffer_size}, server_lr={self.server_lr}, beta1={self.beta1}, beta2={self.beta2}, "
                f"epsilon={self.epsilon}, delay_adaptive={self.delay_adaptive}, tau_c={self.tau_c})")
