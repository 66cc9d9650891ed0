"""Staleness functions s(t - τ) of FedAsync, exactly as in the paper.

Xie, Koyejo, Gupta. "Asynchronous Federated Optimization", OPT 2020,
https://arxiv.org/abs/1903.03934, Section 5.2. With staleness t - τ (the current global
version t minus the version τ the client started from):

- constant:   s(t - τ) = 1
- polynomial: s_a(t - τ) = (t - τ + 1)^(-a)
- hinge:      s_{a,b}(t - τ) = 1 if t - τ <= b, else 1 / (a (t - τ - b) + 1)

The public :meth:`Staleness.weight` checks its argument and calls the one-line
``_raw_weight`` each function writes. Aggregators take the flat keys ``staleness``,
``a``, ``b`` (so sweeps are ``server.aggregator.a=0.5,1``) and build the function with
:func:`make_staleness`.
"""

from __future__ import annotations

import abc

from lightning_asyncfl.errors import checking, non_negative, require_choice, validate


class Staleness(abc.ABC):
    """A staleness weight s(τ) for an update that is τ global versions old."""

    def weight(self, staleness: int) -> float:
        """s(staleness); staleness is a number of global versions, >= 0."""
        if staleness < 0:
            raise ValueError(f"staleness must be >= 0, got {staleness}")
        return float(self._raw_weight(staleness))

    @abc.abstractmethod
    def _raw_weight(self, staleness: int) -> float:
        """s(staleness) for a checked staleness >= 0."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Constant(Staleness):
    """s(τ) = 1."""

    def _raw_weight(self, staleness: int) -> float:
        return 1.0


class Polynomial(Staleness):
    """s(τ) = (τ + 1)^(-a), a >= 0."""

    def __init__(self, *, a: float) -> None:
        self.a = non_negative("a", a)

    def _raw_weight(self, staleness: int) -> float:
        return (staleness + 1.0) ** (-self.a)


class Hinge(Staleness):
    """s(τ) = 1 if τ <= b else 1 / (a (τ - b) + 1), a >= 0, b >= 0."""

    def __init__(self, *, a: float, b: float) -> None:
        with checking() as check:
            validate(check, non_negative, "a", a)
            validate(check, non_negative, "b", b)
        self.a, self.b = float(a), float(b)

    def _raw_weight(self, staleness: int) -> float:
        if staleness <= self.b:
            return 1.0
        return 1.0 / (self.a * (staleness - self.b) + 1.0)


def unused_staleness_keys(staleness: Staleness) -> dict[str, str]:
    """The keys ``a``/``b`` that ``staleness`` ignores, each with why."""
    if isinstance(staleness, Constant):
        return {key: "staleness=constant uses neither a nor b" for key in ("a", "b")}
    if isinstance(staleness, Polynomial):
        return {"b": "staleness=polynomial uses only a; b acts only under staleness=hinge"}
    return {}


STALENESS_FUNCTIONS = {"constant": Constant, "polynomial": Polynomial, "hinge": Hinge}


def make_staleness(name: str, *, a: float, b: float) -> Staleness:
    """The staleness function ``name`` with the parameters it uses (``a`` and/or ``b``)."""
    require_choice("staleness", name, STALENESS_FUNCTIONS)
    if name == "constant":
        return Constant()
    if name == "polynomial":
        return Polynomial(a=a)
    return Hinge(a=a, b=b)
