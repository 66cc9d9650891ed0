"""Delay models: how many virtual seconds a client's job takes.

A job's duration runs from its dispatch to the arrival of its update at the server, so it
covers download, local training and upload; with an asynchronous server it is what makes
updates stale. :class:`DelayModel` owns the shared part (the per-sample cost, the checks,
the client table) and each distribution writes one small :meth:`DelayModel._latency`.

Every random draw uses the ``numpy.random.Generator`` passed in (the run's system stream),
so the same seed gives the same delays. Per-client values (device speeds, stale groups)
are drawn once in :meth:`DelayModel.setup`; per-job values in :meth:`DelayModel.duration`.

This module holds the base and the models drawn per job (none, constant, uniform,
exponential, log-normal); the models with a fixed latency per client (``PerClientDelay``,
``SteppedDelay``) are in :mod:`lightning_asyncfl.fixed_delays` and importable from here.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import numpy as np

from lightning_asyncfl import seeding
from lightning_asyncfl._lazy import lazy_attributes
from lightning_asyncfl.context import SetupContext
from lightning_asyncfl.errors import InvalidValue, require

__all__ = [
    "ConstantDelay",
    "DelayModel",
    "ExponentialDelay",
    "LogNormalDelay",
    "NoDelay",
    "PerClientDelay",
    "SteppedDelay",
    "UniformDelay",
]

#: the models with a fixed latency per client live in :mod:`lightning_asyncfl.fixed_delays` (they subclass
#: DelayModel, so this module hands them out on first use rather than importing them)
_NAMES = {name: "lightning_asyncfl.fixed_delays" for name in ("PerClientDelay", "SteppedDelay", "_FixedPerClient")}

__getattr__, __dir__ = lazy_attributes(__name__, _NAMES, globals())

if TYPE_CHECKING:
    from lightning_asyncfl.fixed_delays import PerClientDelay, SteppedDelay


#: the longest job, in virtual seconds (about 32 years): beyond it the clock loses its resolution and then overflows
MAX_SECONDS = 1e9


def _number(key: str, value: Any) -> float:
    """``value`` as a finite float, or :class:`InvalidValue` naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise InvalidValue(key, value, "a finite number")
    return float(value)


def _seconds(key: str, value: Any) -> float:
    """``value`` as a finite number of virtual seconds at most :data:`MAX_SECONDS`, or :class:`InvalidValue`."""
    number = _number(key, value)
    require(abs(number) <= MAX_SECONDS, key, value, f"<= {MAX_SECONDS:g} (virtual seconds)")
    return number


def _integer(key: str, value: Any) -> int:
    """``value`` as an int, or :class:`InvalidValue` naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise InvalidValue(key, value, "an integer")
    return int(value)


class DelayModel(abc.ABC):
    """Virtual duration of client jobs: a latency plus a cost per local training sample.

    Subclasses write :meth:`_latency` (and :meth:`_setup` to draw per-client values once).

    Args:
        per_sample: extra virtual seconds per local training sample of the client, added
            to every job of that client (>= 0). Models compute time growing with data size.
    """

    def __init__(self, *, per_sample: float = 0.0) -> None:
        self.per_sample = _seconds("per_sample", per_sample)
        require(self.per_sample >= 0, "per_sample", per_sample, ">= 0")
        self._num_samples: tuple[int, ...] | None = None

    # -- public API -------------------------------------------------------------------

    @property
    def num_clients(self) -> int:
        """Number of clients given to :meth:`setup`."""
        return len(self._samples())

    def setup(self, context: SetupContext | Sequence[int], rng: np.random.Generator | None = None) -> None:
        """Prepare for a run; called once before it with every client's sample count.

        Args:
            context: the run's :class:`~lightning_asyncfl.context.SetupContext`; per-client
                values are drawn from its delay stream, which the loop goes on drawing
                job durations from. (Also accepted, as before: the number of local training
                samples of each client, by client id, with ``rng``.)
            rng: with a list of sample counts only: the stream to draw from.

        Raises:
            ValueError: on an empty or negative sample count list.
            InvalidValue: when the model's values do not fit the number of clients.
        """
        if isinstance(context, SetupContext):
            num_samples, rng = context.num_samples, context.stream(seeding.DELAY)
        else:
            num_samples = context
        counts = tuple(int(n) for n in num_samples)
        if not counts or min(counts) < 0:
            raise ValueError(f"num_samples must be one count >= 0 per client, got {counts!r}")
        self._num_samples = counts
        try:
            self._setup(rng)
        except BaseException:
            self._num_samples = None  # not set up: duration() keeps refusing to run
            raise

    def duration(self, client_id: int, rng: np.random.Generator) -> float:
        """Virtual seconds of one job of ``client_id``: latency + ``per_sample`` * samples.

        Args:
            client_id: the client that runs the job, in ``[0, num_clients)``.
            rng: the run's system stream; per-job values are drawn from it.

        Returns:
            A finite duration >= 0.
        """
        samples = self._samples()
        if not 0 <= client_id < len(samples):
            raise ValueError(f"client_id must be in [0, {len(samples)}), got {client_id!r}")
        value = float(self._latency(int(client_id), rng)) + self.per_sample * samples[client_id]
        if not (math.isfinite(value) and 0 <= value <= MAX_SECONDS):
            raise ValueError(f"{self!r} gave duration {value!r} for client {client_id}; "
                             f"durations must be in [0, {MAX_SECONDS:g}] virtual seconds")
        return value

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._repr_args().items())
        return f"{type(self).__name__}({args})"

    # -- subclass hooks ---------------------------------------------------------------

    def _setup(self, rng: np.random.Generator) -> None:
        """Draw per-client values once, after the client table is known (default: none)."""

    @abc.abstractmethod
    def _latency(self, client_id: int, rng: np.random.Generator) -> float:
        """Virtual seconds of one job of ``client_id``, without the per-sample cost."""

    def _repr_args(self) -> dict[str, Any]:
        """Constructor arguments shown by ``repr``."""
        return {"per_sample": self.per_sample}

    # -- helpers ----------------------------------------------------------------------

    def _samples(self) -> tuple[int, ...]:
        if self._num_samples is None:
            name = type(self).__name__
            raise RuntimeError(f"{name}.setup(num_samples, rng) must be called first")
        return self._num_samples


class NoDelay(DelayModel):
    """Zero latency: every update arrives at its dispatch time (ties broken by job id)."""

    def _latency(self, client_id: int, rng: np.random.Generator) -> float:
        return 0.0


class ConstantDelay(DelayModel):
    """The same latency for every job.

    Args:
        value: virtual seconds per job (>= 0).
        per_sample: see :class:`DelayModel`.
    """

    def __init__(self, *, value: float = 1.0, per_sample: float = 0.0) -> None:
        super().__init__(per_sample=per_sample)
        self.value = _seconds("value", value)
        require(self.value >= 0, "value", value, ">= 0")

    def _latency(self, client_id: int, rng: np.random.Generator) -> float:
        return self.value

    def _repr_args(self) -> dict[str, Any]:
        return {"value": self.value, **super()._repr_args()}


class UniformDelay(DelayModel):
    """Latency drawn per job uniformly from ``[low, high]``.

    Args:
        low: smallest latency (>= 0).
        high: largest latency (>= low).
        per_sample: see :class:`DelayModel`.
    """

    def __init__(self, *, low: float = 0.0, high: float = 10.0, per_sample: float = 0.0) -> None:
        super().__init__(per_sample=per_sample)
        self.low = _seconds("low", low)
        self.high = _seconds("high", high)
        require(self.low >= 0, "low", low, ">= 0")
        require(self.high >= self.low, "high", high, f">= low ({self.low})")

    def _latency(self, client_id: int, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))

    def _repr_args(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, **super()._repr_args()}


class ExponentialDelay(DelayModel):
    """Latency drawn per job from an exponential distribution (memoryless waiting).

    Args:
        mean: mean latency (> 0).
        per_sample: see :class:`DelayModel`.
    """

    def __init__(self, *, mean: float = 5.0, per_sample: float = 0.0) -> None:
        super().__init__(per_sample=per_sample)
        self.mean = _seconds("mean", mean)
        require(self.mean > 0, "mean", mean, "> 0")

    def _latency(self, client_id: int, rng: np.random.Generator) -> float:
        return float(rng.exponential(self.mean))

    def _repr_args(self) -> dict[str, Any]:
        return {"mean": self.mean, **super()._repr_args()}


class LogNormalDelay(DelayModel):
    """Heterogeneous devices: a fixed speed factor per client times a log-normal job time.

    Client ``k`` gets ``f_k = exp(N(0, client_sigma))`` once, in :meth:`setup`; each of
    its jobs takes ``f_k * exp(N(mu, sigma))``. With ``client_sigma = 0`` all clients are
    alike; with ``sigma = 0`` every job of a client takes the same time.

    Args:
        mu: mean of the per-job log-latency.
        sigma: standard deviation of the per-job log-latency (>= 0).
        client_sigma: standard deviation of the per-client log speed factor (>= 0).
        per_sample: see :class:`DelayModel`.
    """

    def __init__(
        self,
        *,
        mu: float = 0.0,
        sigma: float = 0.25,
        client_sigma: float = 1.0,
        per_sample: float = 0.0,
    ) -> None:
        super().__init__(per_sample=per_sample)
        self.mu = _number("mu", mu)
        self.sigma = _number("sigma", sigma)
        self.client_sigma = _number("client_sigma", client_sigma)
        require(self.sigma >= 0, "sigma", sigma, ">= 0")
        require(self.client_sigma >= 0, "client_sigma", client_sigma, ">= 0")
        self._factors: np.ndarray | None = None

    @property
    def client_factors(self) -> np.ndarray:
        """Each client's fixed speed factor (a copy), drawn in :meth:`setup`."""
        if self._factors is None:
            raise RuntimeError("LogNormalDelay.setup(num_samples, rng) must be called first")
        return self._factors.copy()

    def _setup(self, rng: np.random.Generator) -> None:
        self._factors = np.exp(rng.normal(0.0, self.client_sigma, size=self.num_clients))

    def _latency(self, client_id: int, rng: np.random.Generator) -> float:
        factors = self._factors
        if factors is None:  # only reachable when a subclass overrides _setup
            raise RuntimeError("LogNormalDelay._setup did not draw the client factors")
        return float(factors[client_id] * math.exp(rng.normal(self.mu, self.sigma)))

    def _repr_args(self) -> dict[str, Any]:
        return {"mu": self.mu, "sigma": self.sigma, "client_sigma": self.client_sigma,
                **super()._repr_args()}
