"""Robust combinations of client deltas, for buffered aggregation under attack.

Each function takes the K buffered deltas stacked as a ``[K, P]`` tensor and returns one
``[P]`` vector in place of their mean:

- coordinate-wise median (Yin et al., "Byzantine-Robust Distributed Learning: Towards
  Optimal Statistical Rates", ICML 2018, https://arxiv.org/abs/1803.01498): per
  coordinate, the middle value (the mean of the two middle values when K is even);
- coordinate-wise β-trimmed mean (same paper): per coordinate, drop the ⌊βK⌋ largest and
  ⌊βK⌋ smallest values and average the rest;
- Krum and multi-Krum (Blanchard et al., "Machine Learning with Adversaries: Byzantine
  Tolerant Gradient Descent", NeurIPS 2017, https://arxiv.org/abs/1703.02248): the score
  of delta i is the sum of its squared distances to its K − f − 2 nearest other deltas;
  Krum keeps the one with the lowest score, multi-Krum averages the m lowest;
- norm clipping (applied before any of them): each delta is scaled down to norm at most C.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from lightning_asyncfl.errors import non_negative_int, positive_int, validate

RULES = ["mean", "median", "trimmed_mean", "krum"]


def check_robust(check: Callable[[bool, str, Any, str], None], *, rule: str, trim: float, krum_f: int, krum_m: int,
                 clip_norm: float | None, buffer_size: int) -> None:
    """Check the robust keys of a buffered aggregator with ``check(ok, key, value, allowed)``."""
    check(rule in RULES, "rule", rule, "one of: " + ", ".join(RULES))
    check(0 <= trim < 0.5, "trim", trim, "in [0, 0.5)")
    validate(check, non_negative_int, "krum_f", krum_f)
    validate(check, positive_int, "krum_m", krum_m)
    check(rule != "krum" or buffer_size > krum_f + 2, "buffer_size", buffer_size, f"> krum_f + 2 = {krum_f + 2} with rule=krum")
    check(clip_norm is None or clip_norm > 0, "clip_norm", clip_norm, "null or > 0")


def unused_robust_keys(rule: str) -> dict[str, str]:
    """The robust keys that ``rule`` ignores, each with why."""
    unused = {}
    if rule != "trimmed_mean":
        unused["trim"] = f"trim acts only with rule=trimmed_mean, the rule is {rule}"
    if rule != "krum":
        unused.update({key: f"{key} acts only with rule=krum, the rule is {rule}" for key in ("krum_f", "krum_m")})
    return unused


def robust_combine(deltas: Tensor, *, rule: str, trim: float = 0.2, krum_f: int = 1, krum_m: int = 1, clip_norm: float | None = None) -> Tensor:
    """The ``[K, P]`` deltas clipped to ``clip_norm`` (if set) and combined by ``rule`` into one ``[P]`` vector.

    A buffer too small for Krum (K <= f + 2, e.g. a flushed partial buffer) takes the median.
    """
    if clip_norm is not None:
        deltas = clip_norms(deltas, clip_norm)
    if rule == "median":
        return coordinate_median(deltas)
    if rule == "trimmed_mean":
        return trimmed_mean(deltas, trim)
    if rule == "krum":
        return multi_krum(deltas, krum_f, krum_m) if deltas.shape[0] > krum_f + 2 else coordinate_median(deltas)
    return deltas.mean(dim=0)


def clip_norms(deltas: Tensor, max_norm: float) -> Tensor:
    """Each row of ``deltas`` scaled by min(1, C / ||row||)."""
    norms = deltas.norm(dim=1, keepdim=True)
    return deltas * (max_norm / norms.clamp_min(max_norm))


def coordinate_median(deltas: Tensor) -> Tensor:
    """The coordinate-wise median of the rows (mean of the two middle values for even K)."""
    ordered = deltas.sort(dim=0).values
    k = ordered.shape[0]
    if k % 2:
        return ordered[k // 2]
    return (ordered[k // 2 - 1] + ordered[k // 2]) / 2


def trimmed_mean(deltas: Tensor, beta: float) -> Tensor:
    """The coordinate-wise mean after dropping the ⌊βK⌋ largest and smallest values."""
    k = deltas.shape[0]
    cut = math.floor(beta * k)
    if k - 2 * cut < 1:
        raise ValueError(f"trim {beta} removes every one of {k} updates")
    return deltas.sort(dim=0).values[cut : k - cut].mean(dim=0)


def krum_scores(deltas: Tensor, f: int) -> Tensor:
    """Krum's score of each row: the sum of squared distances to its K − f − 2 nearest other rows."""
    k = deltas.shape[0]
    nearest = k - f - 2
    if nearest < 1:
        raise ValueError(f"Krum with f={f} needs more than {f + 2} updates, got {k}")
    distances = torch.cdist(deltas, deltas).pow(2)
    distances.fill_diagonal_(float("inf"))
    return distances.sort(dim=1).values[:, :nearest].sum(dim=1)


def multi_krum(deltas: Tensor, f: int, m: int = 1) -> Tensor:
    """The mean of the ``m`` rows with the lowest Krum scores (``m = 1``: Krum)."""
    chosen = krum_scores(deltas, f).argsort()[: max(1, min(m, deltas.shape[0]))]
    return deltas[chosen].mean(dim=0)
