"""Reducers: how a buffered aggregator combines its K deltas into one vector.

A buffered aggregator (FedBuff, the FedOpt family, FedAvg, FADAS) forms one vector from
the K deltas Δ_i of its buffer, each scaled by its staleness weight s_i, and then steps
with it. The reducer is that combination, chosen by ``server.aggregator.reducer``:

- ``mean`` (every paper's rule): Σ_i w_i s_i Δ_i / Σ_i w_i with the aggregator's sample
  weights w_i, or (1/K) Σ_i s_i Δ_i when the aggregator counts clients;
- ``median``, ``trimmed_mean`` (option ``trim``), ``krum`` (options ``f``, ``m``): the
  robust combinations of :mod:`.robust` applied to the rows s_i Δ_i; they count clients,
  so sample weights are not used.

Every reducer takes ``clip_norm`` (null: none): each row s_i Δ_i is scaled down to that
norm first (then ``mean`` weighs the clipped rows as above).

In a config the reducer is a name (``reducer: median``), a name with options
(``reducer: {name: trimmed_mean, trim: 0.3}``) or any class of your own
(``reducer: {_target_: my.module.MyReducer, ...}``, a subclass of :class:`Reducer`
writing :meth:`Reducer._combine`). The older flat keys ``rule``, ``trim``, ``krum_f``,
``krum_m`` and ``clip_norm`` of FedBuff and FedOpt still work, with a deprecation warning.
"""

from __future__ import annotations

import abc
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_asyncfl.aggregators.ops import staleness_weighted_mean, weighted_mean
from lightning_asyncfl.aggregators.robust import check_robust, clip_norms, coordinate_median, multi_krum, trimmed_mean
from lightning_asyncfl.errors import InvalidValue, InvalidValues, checking, non_negative_int, positive, positive_int, require, validate

Check = Callable[[bool, str, Any, str], None]


class Reducer(abc.ABC):
    """K staleness-scaled deltas to one vector; the public call clips, :meth:`_combine` combines.

    Args:
        clip_norm: scale every row s_i Δ_i down to this norm first (``None``: no clipping).
    """

    name = ""

    def __init__(self, *, clip_norm: float | None = None) -> None:
        self.clip_norm = None if clip_norm is None else positive("clip_norm", clip_norm)

    def __call__(self, deltas: Sequence[Tensor], scales: Sequence[float], weights: Sequence[float] | None = None) -> Tensor:
        """The combination of the rows s_i Δ_i (``weights`` w_i: sample weights, ``None``: count clients)."""
        if not deltas:
            raise ValueError(f"{type(self).__name__} needs at least one delta, got none")
        rows = torch.stack([delta * scale for delta, scale in zip(deltas, scales)])
        if self.clip_norm is not None:
            rows = clip_norms(rows, self.clip_norm)
        return self._combine(rows, weights)

    @abc.abstractmethod
    def _combine(self, rows: Tensor, weights: Sequence[float] | None) -> Tensor:
        """One ``[P]`` vector from the ``[K, P]`` (clipped) rows."""

    def check_buffer(self, check: Check, buffer_size: int) -> None:
        """Check that a buffer of ``buffer_size`` suits this reducer, with ``check(ok, key, value, allowed)``."""

    @property
    def is_plain_mean(self) -> bool:
        """Whether this is the unclipped mean, which aggregators compute with their own exact kernel."""
        return False

    def _options(self) -> str:
        return ""

    def __repr__(self) -> str:
        parts = [p for p in (self._options(), "" if self.clip_norm is None else f"clip_norm={self.clip_norm}") if p]
        return f"{type(self).__name__}({', '.join(parts)})"


class Mean(Reducer):
    """Σ w_i s_i Δ_i / Σ w_i (sample weights), or (1/K) Σ s_i Δ_i (clients counted)."""

    name = "mean"

    def __call__(self, deltas: Sequence[Tensor], scales: Sequence[float], weights: Sequence[float] | None = None) -> Tensor:
        if self.clip_norm is not None:
            return super().__call__(deltas, scales, weights)
        if weights is None:
            return staleness_weighted_mean(deltas, scales)
        return weighted_mean(deltas, weights, scales)

    def _combine(self, rows: Tensor, weights: Sequence[float] | None) -> Tensor:
        if weights is None:
            return staleness_weighted_mean(list(rows.unbind(0)), [1.0] * rows.shape[0])
        return weighted_mean(list(rows.unbind(0)), weights)

    @property
    def is_plain_mean(self) -> bool:
        return self.clip_norm is None


class Median(Reducer):
    """Coordinate-wise median of the rows (Yin et al. 2018)."""

    name = "median"

    def _combine(self, rows: Tensor, weights: Sequence[float] | None) -> Tensor:
        return coordinate_median(rows)


class TrimmedMean(Reducer):
    """Coordinate-wise mean after dropping ⌊trim·K⌋ rows at each end (Yin et al. 2018).

    Args:
        trim: β in [0, 0.5), the share dropped at each end. The rest as :class:`Reducer`.
    """

    name = "trimmed_mean"

    def __init__(self, *, trim: float = 0.2, clip_norm: float | None = None) -> None:
        with checking() as check:
            check(isinstance(trim, (int, float)) and not isinstance(trim, bool) and 0 <= trim < 0.5, "trim", trim, "a number in [0, 0.5)")
            super().__init__(clip_norm=clip_norm)
        self.trim = float(trim)

    def _combine(self, rows: Tensor, weights: Sequence[float] | None) -> Tensor:
        return trimmed_mean(rows, self.trim)

    def _options(self) -> str:
        return f"trim={self.trim}"


class Krum(Reducer):
    """Krum / multi-Krum (Blanchard et al. 2017); a buffer of K <= f + 2 rows (a flush) takes the median.

    Args:
        f: the number of attackers tolerated (an integer >= 0; buffers must exceed f + 2).
        m: the number of lowest-scored rows averaged (an integer >= 1; 1: Krum).
            The rest as :class:`Reducer`.
    """

    name = "krum"

    def __init__(self, *, f: int = 1, m: int = 1, clip_norm: float | None = None) -> None:
        with checking() as check:
            validate(check, non_negative_int, "f", f)
            validate(check, positive_int, "m", m)
            super().__init__(clip_norm=clip_norm)
        self.f, self.m = f, m

    def _combine(self, rows: Tensor, weights: Sequence[float] | None) -> Tensor:
        return multi_krum(rows, self.f, self.m) if rows.shape[0] > self.f + 2 else coordinate_median(rows)

    def check_buffer(self, check: Check, buffer_size: int) -> None:
        check(buffer_size > self.f + 2, "buffer_size", buffer_size, f"> reducer.f + 2 = {self.f + 2} with reducer=krum")

    def _options(self) -> str:
        return f"f={self.f}, m={self.m}"


#: the reducers a config may name
REDUCERS: dict[str, type[Reducer]] = {cls.name: cls for cls in (Mean, Median, TrimmedMean, Krum)}
_CHOICES = "one of: " + ", ".join(REDUCERS) + "; or {name: <one of them>, <its options>}; or {_target_: <a Reducer class>}"


def make_reducer(spec: str | Mapping[str, Any] | Reducer | None) -> Reducer:
    """The reducer a config names: a :class:`Reducer`, a name, ``{name: ..., options}`` or ``{_target_: ...}``.

    Raises:
        InvalidValue / InvalidValues: an unknown name or a bad option, keys under ``reducer``.
    """
    if spec is None:
        return Mean()
    if isinstance(spec, Reducer):
        return spec
    if isinstance(spec, str):
        require(spec in REDUCERS, "reducer", spec, _CHOICES)
        return REDUCERS[spec]()
    if isinstance(spec, Mapping):
        options = dict(spec)
        if "_target_" in options:
            from hydra.utils import instantiate

            built = instantiate(options, _convert_="all")
            require(isinstance(built, Reducer), "reducer._target_", options["_target_"], "a subclass of lightning_asyncfl.aggregators.Reducer")
            return built
        name = options.pop("name", None)
        require(name in REDUCERS, "reducer.name", name, "one of: " + ", ".join(REDUCERS))
        try:
            return REDUCERS[name](**options)
        except (InvalidValue, InvalidValues) as error:
            raise error.under("reducer") from None
        except TypeError as error:
            raise InvalidValue("reducer", dict(spec), f"{name}'s options only ({error})") from None
    raise InvalidValue("reducer", spec, _CHOICES)


def build_reducer(check: Check, *, reducer: Any, buffer_size: int, owner: str, rule: str | None = None,
                  trim: float | None = None, krum_f: int | None = None, krum_m: int | None = None,
                  clip_norm: float | None = None) -> Reducer:
    """The reducer of a buffered aggregator from ``reducer`` or, deprecated, the flat keys ``rule`` ... ``clip_norm``.

    Problems go to ``check`` (or are raised as :class:`InvalidValue` with keys under ``reducer``).
    """
    legacy = {k: v for k, v in (("rule", rule), ("trim", trim), ("krum_f", krum_f), ("krum_m", krum_m), ("clip_norm", clip_norm)) if v is not None}
    if not legacy:
        built = make_reducer(reducer)
        built.check_buffer(check, buffer_size)
        return built
    check(reducer in (None, "mean"), "reducer", reducer, f"left at mean when the deprecated keys {sorted(legacy)} are set (use reducer alone)")
    warnings.warn(
        f"{owner}: the flat robust key(s) {', '.join(sorted(legacy))} are deprecated; use server.aggregator.reducer "
        f"(e.g. reducer=median, or reducer={{name: trimmed_mean, trim: 0.3, clip_norm: 1.0}}, "
        f"reducer={{name: krum, f: 1, m: 1}})",
        FutureWarning,
        stacklevel=4,
    )
    rule = rule or "mean"
    trim, krum_f, krum_m = (0.2 if trim is None else trim), (1 if krum_f is None else krum_f), (1 if krum_m is None else krum_m)
    problems = []

    def collect(ok: bool, key: str, value: Any, allowed: str) -> None:
        problems.append(not ok)
        check(ok, key, value, allowed)

    check_robust(collect, rule=rule, trim=trim, krum_f=krum_f, krum_m=krum_m, clip_norm=clip_norm, buffer_size=buffer_size)
    if any(problems):
        return Mean()  # ``check`` holds the problems
    options: dict[str, Any] = {"clip_norm": clip_norm}
    if rule == "trimmed_mean":
        options["trim"] = trim
    if rule == "krum":
        options.update(f=krum_f, m=krum_m)
    return REDUCERS[rule](**options)

