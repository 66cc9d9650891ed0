"""FADAS: buffered asynchronous deltas fed to an AMSGrad server, with a delay-adaptive step.

Wang, Wang, Lu, Chen. "FADAS: Towards Federated Adaptive Asynchronous Optimization",
ICML 2024, https://arxiv.org/abs/2407.18365, Algorithm 1 with the delay-adaptive learning
rate, as the authors run it (https://github.com/yujiaw98/FADAS, ``g_delay_adaptive.py``
lines 208-215 and ``update.py`` ``update_model_inplace``, branch ``fedams``, lines 325-341).
With the buffer M_t of M deltas Δ^i_t (trained − base), their largest staleness
τ^max_t = max_{i∈M_t} τ^i_t, and t = 1, 2, ... counting the server's steps:

    Δ_t = (1/M) Σ_{i∈M_t} Δ^i_t
    m_t = β_1 m_{t-1} + (1 − β_1) Δ_t
    v_t = β_2 v_{t-1} + (1 − β_2) Δ_t²
    v̂_t = max(v̂_{t-1}, v_t)
    η_t = η                 if τ^max_t ≤ τ_c
    η_t = η / τ^max_t       if τ^max_t > τ_c                     (delay_adaptive)
    x_{t+1} = x_t + (η_t / (1 − β_1^t)) · m_t / (√v̂_t / √(1 − β_2^t) + ε)

with m_0 = v_0 = v̂_0 = 0 (the code's ``max_init`` default). The code's step is
``lr * lr_l / bias_correction1`` with ``lr_l = 1/max(delay)`` above ``tauc`` (else 1), and
``denom = max_exp_avg_sq.sqrt() / sqrt(bias_correction2) + eps``, where
``bias_correction_k = 1 − β_k^iteration`` and ``iteration`` is the round index plus one.
``bias_correction=false`` drops both corrections (the paper's Algorithm 1 as printed);
``delay_adaptive=false`` keeps η_t = η (plain FADAS, the authors' ``asyncfl_forward.py``).
The paper writes the delay-adaptive rate as min(η, 1/τ^max_t) above τ_c, which changes
nothing while η ≤ 1/τ^max_t (at the preset's η = 0.01, for every τ^max_t below 100); the
code divides η by τ^max_t, and that is what runs here.

When the loop flushes a partial buffer, M is the number of updates actually buffered.
The mean Δ_t can be replaced by a robust ``reducer`` (see :mod:`.reducers`). The state
(m, v, v̂ and the step count t) is created at the first aggregation, on the global
model's device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_asyncfl.aggregators.base import AsyncAggregator
from lightning_asyncfl.aggregators.reducers import Reducer, build_reducer
from lightning_asyncfl.aggregators.server_state import FlatState
from lightning_asyncfl.errors import checking, non_negative, positive, positive_int, probability, validate
from lightning_asyncfl.state import ClientUpdate, ModelState

STATE_KEYS = ("m", "v", "v_hat")


def delay_adaptive_lr(server_lr: float, tau_max: int, tau_c: float) -> float:
    """η_t = η if τ^max_t ≤ τ_c, else η / τ^max_t (the authors' ``lr * lr_l``, ``lr_l = 1/max(delay)``)."""
    return server_lr if tau_max <= tau_c else server_lr / tau_max


def fadas_step(x: Tensor, m: Tensor, v: Tensor, v_hat: Tensor, delta: Tensor, lr: float, beta1: float, beta2: float,
               epsilon: float, step: int | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One AMSGrad step on the mean delta Δ_t with rate η_t = ``lr``: (x_{t+1}, m_t, v_t, v̂_t), new tensors.

    ``step`` is t >= 1 for Adam's bias corrections, as the authors' code applies them
    (``None``: no corrections).
    """
    m = (m * beta1).add_(delta, alpha=1.0 - beta1)
    v = (v * beta2).addcmul_(delta, delta, value=1.0 - beta2)
    v_hat = torch.maximum(v_hat, v)
    if step is None:
        return x.addcdiv(m, v_hat.sqrt().add_(epsilon), value=lr), m, v, v_hat
    correction1, correction2 = 1.0 - beta1**step, 1.0 - beta2**step
    denominator = (v_hat.sqrt() / math.sqrt(correction2)).add_(epsilon)
    return x.addcdiv(m, denominator, value=lr / correction1), m, v, v_hat


class FADAS(AsyncAggregator):
    """FADAS with buffer size M, AMSGrad hyperparameters and the delay-adaptive learning rate.

    Args:
        buffer_size: M, the number of updates per aggregation.
        server_lr: η > 0, the global learning rate.
        beta1: β_1 in [0, 1).
        beta2: β_2 in [0, 1).
        epsilon: ε > 0.
        delay_adaptive: use η_t above (False: η_t = η).
        tau_c: τ_c >= 0, the delay threshold above which η_t = η / τ^max_t.
        bias_correction: Adam's bias corrections 1 − β^t, as the authors' code (False: the
            equations without them).
        reducer: Δ_t from the deltas: ``mean`` (the paper) or a robust reducer.
    """

    def __init__(self, *, buffer_size: int = 10, server_lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99,
                 epsilon: float = 1e-8, delay_adaptive: bool = True, tau_c: float = 1.0, bias_correction: bool = True,
                 reducer: str | Mapping[str, Any] | Reducer = "mean") -> None:
        with checking() as check:
            validate(check, positive_int, "buffer_size", buffer_size)
            validate(check, positive, "server_lr", server_lr)
            validate(check, probability, "beta1", beta1, open_high=True)
            validate(check, probability, "beta2", beta2, open_high=True)
            validate(check, positive, "epsilon", epsilon)
            validate(check, non_negative, "tau_c", tau_c)
            self.reducer = build_reducer(check, reducer=reducer, buffer_size=buffer_size, owner="FADAS")
        super().__init__(buffer_size=buffer_size)
        self.server_lr, self.beta1, self.beta2, self.epsilon = float(server_lr), float(beta1), float(beta2), float(epsilon)
        self.delay_adaptive, self.tau_c, self.bias_correction = bool(delay_adaptive), float(tau_c), bool(bias_correction)
        self._state = FlatState("FADAS", STATE_KEYS)
        self.steps = 0  # t of the last step

    def learning_rate(self, tau_max: int) -> float:
        """η_t for a buffer whose largest staleness is ``tau_max``."""
        return delay_adaptive_lr(self.server_lr, tau_max, self.tau_c) if self.delay_adaptive else self.server_lr

    def aggregate(self, global_state: ModelState, updates: Sequence[ClientUpdate], version: int) -> ModelState:
        x = global_state.flat
        delta = self.reducer([u.delta.to(x) for u in updates], [1.0] * len(updates))
        state = self._state.get(x, lambda like: {k: torch.zeros_like(like) for k in STATE_KEYS})
        lr = self.learning_rate(max(u.staleness for u in updates))
        step = self.steps + 1
        flat, *moments = fadas_step(x, state["m"], state["v"], state["v_hat"], delta, lr, self.beta1, self.beta2, self.epsilon,
                                    step if self.bias_correction else None)  # fmt: skip
        self._state.set(dict(zip(STATE_KEYS, moments)))
        self.steps = step
        return global_state.with_flat(flat)

    def state_dict(self) -> dict[str, Any]:
        """``{"m": m_t, "v": v_t, "v_hat": v̂_t, "step": t}`` (``{}`` before the first aggregation)."""
        state = self._state.state_dict()
        return {**state, "step": self.steps} if state else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        step = state.pop("step", None)
        if state and step is None:
            raise ValueError("FADAS state needs 'step' (the server steps so far, for the bias corrections), got none")
        self._state.load_state_dict(state)
        self.steps = int(step or 0)

    def __repr__(self) -> str:
        robust = "" if self.reducer.is_plain_mean else f", reducer={self.reducer!r}"
        return (f"FADAS(buffer_size={self.buffer_size}, server_lr={self.server_lr}, beta1={self.beta1}, beta2={self.beta2}, "
                f"epsilon={self.epsilon}, delay_adaptive={self.delay_adaptive}, tau_c={self.tau_c}, "
                f"bias_correction={self.bias_correction}{robust})")
