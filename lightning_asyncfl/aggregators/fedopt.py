"""FedOpt: a server optimizer (momentum, Adagrad, Adam, Yogi) on the averaged client deltas.

Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar, McMahan. "Adaptive Federated
Optimization", ICLR 2021, https://arxiv.org/abs/2003.00295, Algorithm 2. The buffered
deltas Δ_i = trained − base form the pseudo-gradient (the paper's 1/|S| mean is
``weighted=false`` with no staleness; ``weighted=true`` uses sample weights w_i = n_i, and
s is a FedAsync staleness function, constant by default):

    Δ_t = Σ_i w_i s(τ_i) Δ_i / Σ_i w_i

and a server optimizer takes one step x_{t+1} = x_t + step(Δ_t). FedAvgM (Hsu et al. 2019,
https://arxiv.org/abs/1909.06335): m_t = β m_{t-1} + Δ_t, x_{t+1} = x_t + η m_t. The
adaptive three (Algorithm 2, with m_{-1} = 0 and v_{-1} = τ², the smallest value the
algorithm's v_{-1} ≥ τ² allows):

    m_t = β_1 m_{t-1} + (1 − β_1) Δ_t
    v_t = v_{t-1} + Δ_t²                                   (FedAdagrad)
    v_t = β_2 v_{t-1} + (1 − β_2) Δ_t²                     (FedAdam)
    v_t = v_{t-1} − (1 − β_2) Δ_t² sign(v_{t-1} − Δ_t²)    (FedYogi)
    x_{t+1} = x_t + η m_t / (√v_t + τ)

There is no bias correction, as in the paper (τ and v_{-1} = τ² handle the cold start).

Under attack, Δ_t can instead be a robust combination of the staleness-scaled deltas
s(τ_i) Δ_i (``reducer``: median, trimmed mean, Krum / multi-Krum, each optionally after
clipping; see :mod:`.reducers`); robust reducers count clients, so sample weights are not
used then.
``buffer_size`` K: with the round scheduler this is synchronous FedOpt; with the
concurrency scheduler it is FedBuff's buffer with a server optimizer (``server=fedbuff_adam``).
The server state (m, v) is created at the first aggregation, on the global model's device.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_asyncfl.aggregators.base import AsyncAggregator
from lightning_asyncfl.aggregators.ops import weighted_mean
from lightning_asyncfl.aggregators.reducers import Reducer, build_reducer
from lightning_asyncfl.aggregators.server_state import FlatState
from lightning_asyncfl.aggregators.staleness import make_staleness
from lightning_asyncfl.errors import checking, positive, positive_int, probability, validate
from lightning_asyncfl.state import ClientUpdate, ModelState


def pseudo_gradient(deltas: Sequence[Tensor], weights: Sequence[float], scales: Sequence[float]) -> Tensor:
    """Δ_t = Σ_i w_i s_i Δ_i / Σ_i w_i, on flat vectors (``scales`` are the s_i)."""
    return weighted_mean(deltas, weights, scales)


def momentum_step(x: Tensor, m: Tensor, delta: Tensor, server_lr: float, momentum: float) -> tuple[Tensor, Tensor]:
    """m_t = β m_{t-1} + Δ_t; x + η m_t. Returns (x_{t+1}, m_t), new tensors."""
    m = (m * momentum).add_(delta)
    return x.add(m, alpha=server_lr), m


def adaptive_step(x: Tensor, m: Tensor, v: Tensor, delta: Tensor, server_lr: float, beta1: float, tau: float) -> tuple[Tensor, Tensor]:
    """m_t = β_1 m_{t-1} + (1 − β_1) Δ_t; x + η m_t / (√v_t + τ) with v_t given. Returns (x_{t+1}, m_t)."""
    m = (m * beta1).add_(delta, alpha=1.0 - beta1)
    return x.addcdiv(m, v.sqrt().add_(tau), value=server_lr), m


class FedOpt(AsyncAggregator):
    """Base of the server optimizers: forms Δ_t, keeps the state, calls :meth:`_step`.

    A subclass sets its own hyperparameters as attributes before calling
    ``super().__init__`` and checks them in :meth:`_check` (so every bad value of a config is
    reported at once), names its state tensors in ``state_keys`` and writes
    :meth:`_initial_state` and :meth:`_step` (new tensors, never in place: :meth:`state_dict`
    hands out references).

    Args:
        buffer_size: K, aggregate when this many updates are buffered.
        server_lr: η > 0.
        weighted: weight deltas by their number of samples n_i; False gives the plain mean.
        staleness: ``constant``, ``polynomial`` or ``hinge`` (s in the docstring above).
        a: exponent of ``polynomial``, slope of ``hinge``; >= 0.
        b: threshold of ``hinge``; >= 0.
        reducer: Δ_t from the deltas: ``mean`` (the paper), ``median``, ``trimmed_mean`` or
            ``krum``, with options as ``{name: ..., ...}``, or a :class:`~.reducers.Reducer`.
        rule, trim, krum_f, krum_m, clip_norm: deprecated spellings of ``reducer``.
    """

    state_keys: tuple[str, ...] = ()

    def __init__(self, *, buffer_size: int = 10, server_lr: float = 1.0, weighted: bool = True,
                 staleness: str = "constant", a: float = 0.5, b: float = 4.0, reducer: str | Mapping[str, Any] | Reducer = "mean",
                 rule: str | None = None, trim: float | None = None, krum_f: int | None = None, krum_m: int | None = None,
                 clip_norm: float | None = None) -> None:
        with checking() as check:
            validate(check, positive_int, "buffer_size", buffer_size)
            validate(check, positive, "server_lr", server_lr)
            self.reducer = build_reducer(check, reducer=reducer, buffer_size=buffer_size, owner=type(self).__name__, rule=rule,
                                         trim=trim, krum_f=krum_f, krum_m=krum_m, clip_norm=clip_norm)  # fmt: skip
            self._check(check)
            self.staleness = make_staleness(staleness, a=a, b=b)  # last: it raises rather than collects
        super().__init__(buffer_size=buffer_size)
        self.server_lr, self.weighted = float(server_lr), bool(weighted)
        self.legacy_rule = None if rule is None and trim is None and krum_f is None and krum_m is None else (rule or "mean")
        self._state = FlatState(type(self).__name__, self.state_keys)

    def _check(self, check: Callable[[bool, str, Any, str], None]) -> None:
        """Check the subclass's own hyperparameters with ``check(ok, key, value, allowed)``."""

    @abc.abstractmethod
    def _initial_state(self, flat: Tensor) -> dict[str, Tensor]:
        """The state before the first step, shaped, typed and placed like ``flat``."""

    @abc.abstractmethod
    def _step(self, x: Tensor, delta: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """(x_{t+1}, new state) from x_t, the pseudo-gradient Δ_t and the state."""

    def aggregate(self, global_state: ModelState, updates: Sequence[ClientUpdate], version: int) -> ModelState:
        x = global_state.flat
        weights = [float(u.num_samples) if self.weighted else 1.0 for u in updates]
        scales = [self.staleness.weight(u.staleness) for u in updates]
        delta = self.reducer([u.delta.to(x) for u in updates], scales, weights)  # the mean: pseudo_gradient's sum
        flat, state = self._step(x, delta, self._state.get(x, self._initial_state))
        self._state.set(state)
        return global_state.with_flat(flat)

    def state_dict(self) -> dict[str, Any]:
        """The optimizer state (``{}`` before the first aggregation)."""
        return self._state.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._state.load_state_dict(state)

    def _extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        robust = "" if self.reducer.is_plain_mean else f", reducer={self.reducer!r}"
        return (f"{type(self).__name__}(buffer_size={self.buffer_size}, server_lr={self.server_lr}{self._extra_repr()}, "
                f"weighted={self.weighted}, staleness={self.staleness!r}{robust})")


class FedAvgM(FedOpt):
    """Server momentum; ``momentum=0, server_lr=1`` is FedAvg written with deltas.

    Args:
        momentum: β in [0, 1). The rest as :class:`FedOpt`.
    """

    state_keys = ("m",)

    def __init__(self, *, buffer_size: int = 10, server_lr: float = 1.0, momentum: float = 0.9, weighted: bool = True,
                 staleness: str = "constant", a: float = 0.5, b: float = 4.0, **robust: Any) -> None:
        self.momentum = float(momentum)
        super().__init__(buffer_size=buffer_size, server_lr=server_lr, weighted=weighted, staleness=staleness, a=a, b=b, **robust)

    def _check(self, check: Callable[[bool, str, Any, str], None]) -> None:
        validate(check, probability, "momentum", self.momentum, open_high=True)

    def _initial_state(self, flat: Tensor) -> dict[str, Tensor]:
        return {"m": torch.zeros_like(flat)}

    def _step(self, x: Tensor, delta: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        x, m = momentum_step(x, state["m"], delta, self.server_lr, self.momentum)
        return x, {"m": m}

    def _extra_repr(self) -> str:
        return f", momentum={self.momentum}"


class AdaptiveFedOpt(FedOpt):
    """Algorithm 2's shared part; a subclass writes the second moment :meth:`_second_moment`.

    Args:
        beta1: β_1 in [0, 1).
        tau: τ > 0, the adaptivity; v starts at τ². The rest as :class:`FedOpt`.
    """

    state_keys = ("m", "v")

    def __init__(self, *, buffer_size: int = 10, server_lr: float = 0.01, beta1: float = 0.9, tau: float = 1e-3,
                 weighted: bool = True, staleness: str = "constant", a: float = 0.5, b: float = 4.0, **robust: Any) -> None:
        self.beta1, self.tau = float(beta1), float(tau)
        super().__init__(buffer_size=buffer_size, server_lr=server_lr, weighted=weighted, staleness=staleness, a=a, b=b, **robust)

    def _check(self, check: Callable[[bool, str, Any, str], None]) -> None:
        validate(check, probability, "beta1", self.beta1, open_high=True)
        validate(check, positive, "tau", self.tau)

    @abc.abstractmethod
    def _second_moment(self, v: Tensor, delta_sq: Tensor) -> Tensor:
        """v_t from v_{t-1} and Δ_t² (a new tensor)."""

    def _initial_state(self, flat: Tensor) -> dict[str, Tensor]:
        return {"m": torch.zeros_like(flat), "v": torch.full_like(flat, self.tau**2)}

    def _step(self, x: Tensor, delta: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        v = self._second_moment(state["v"], delta * delta)
        x, m = adaptive_step(x, state["m"], v, delta, self.server_lr, self.beta1, self.tau)
        return x, {"m": m, "v": v}

    def _extra_repr(self) -> str:
        return f", beta1={self.beta1}, tau={self.tau}"


class FedAdagrad(AdaptiveFedOpt):
    """v_t = v_{t-1} + Δ_t² (Adagrad has no β_2)."""

    def _second_moment(self, v: Tensor, delta_sq: Tensor) -> Tensor:
        return v + delta_sq


class FedAdam(AdaptiveFedOpt):
    """v_t = β_2 v_{t-1} + (1 − β_2) Δ_t².

    Args:
        beta2: β_2 in [0, 1). The rest as :class:`AdaptiveFedOpt`.
    """

    def __init__(self, *, buffer_size: int = 10, server_lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99,
                 tau: float = 1e-3, weighted: bool = True, staleness: str = "constant", a: float = 0.5, b: float = 4.0,
                 **robust: Any) -> None:
        self.beta2 = float(beta2)
        super().__init__(buffer_size=buffer_size, server_lr=server_lr, beta1=beta1, tau=tau, weighted=weighted,
                         staleness=staleness, a=a, b=b, **robust)

    def _check(self, check: Callable[[bool, str, Any, str], None]) -> None:
        super()._check(check)
        validate(check, probability, "beta2", self.beta2, open_high=True)

    def _second_moment(self, v: Tensor, delta_sq: Tensor) -> Tensor:
        return (v * self.beta2).add_(delta_sq, alpha=1.0 - self.beta2)

    def _extra_repr(self) -> str:
        return f", beta1={self.beta1}, beta2={self.beta2}, tau={self.tau}"


class FedYogi(FedAdam):
    """v_t = v_{t-1} − (1 − β_2) Δ_t² sign(v_{t-1} − Δ_t²): v moves by a fixed share of Δ_t²."""

    def _second_moment(self, v: Tensor, delta_sq: Tensor) -> Tensor:
        return v - (1.0 - self.beta2) * delta_sq * torch.sign(v - delta_sq)
