"""Pure kernels the aggregators share: weighted sums and means of flat vectors.

Every aggregation rule ends in a weighted sum of model-sized flat vectors (client deltas,
client models, tier models, control variates). The kernels below are the one place that
sum is written: a fresh zero vector, then one ``add_(vector, alpha=weight)`` per vector in
the given order, then one division where a mean is asked for. Rules that keep this order
give the same bits run after run, on any machine with the same torch build.

- :func:`weighted_sum`: Σ_i w_i x_i (w_i = 1 when no weights are given);
- :func:`staleness_weighted_mean`: (1/K) Σ_i s(τ_i) Δ_i, FedBuff's buffer mean;
- :func:`weighted_mean`: Σ_i w_i s_i x_i / Σ_i w_i, the sample-weighted mean of FedOpt
  (``scales`` s_i default to 1);
- :func:`normalized_weighted_sum`: Σ_i (w_i / Σ_j w_j) x_i, FedAvg's average (each weight
  normalised first, so the result is a convex combination even for one vector).

Nothing is modified in place; the result is a new tensor shaped like the first vector.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _check_lengths(vectors: Sequence[Tensor], name: str, values: Sequence[float] | None) -> None:
    if not vectors:
        raise ValueError("a weighted sum needs at least one vector, got none")
    if values is not None and len(values) != len(vectors):
        raise ValueError(f"{len(vectors)} vectors need as many {name}, got {len(values)}")


def weighted_sum(vectors: Sequence[Tensor], weights: Sequence[float] | None = None) -> Tensor:
    """Σ_i w_i x_i, accumulated in order into a new zero vector (w_i = 1 without ``weights``)."""
    _check_lengths(vectors, "weights", weights)
    out = torch.zeros_like(vectors[0])
    if weights is None:
        for vector in vectors:
            out.add_(vector)
    else:
        for vector, weight in zip(vectors, weights):
            out.add_(vector, alpha=weight)
    return out


def staleness_weighted_mean(deltas: Sequence[Tensor], staleness_weights: Sequence[float]) -> Tensor:
    """(1/K) Σ_{i=1..K} s_i Δ_i: the mean of K deltas, each scaled by its staleness weight s_i."""
    return weighted_sum(deltas, staleness_weights).div_(len(deltas))


def weighted_mean(vectors: Sequence[Tensor], weights: Sequence[float], scales: Sequence[float] | None = None) -> Tensor:
    """Σ_i w_i s_i x_i / Σ_i w_i: weights w_i (e.g. sample counts) normalise, scales s_i do not.

    Raises:
        ValueError: the weights do not sum to a positive number.
    """
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"a weighted mean needs a positive total weight, got weights {list(weights)}")
    _check_lengths(vectors, "weights", weights)
    if scales is None:
        return weighted_sum(vectors, weights).div_(total)
    _check_lengths(vectors, "scales", scales)
    return weighted_sum(vectors, [w * s for w, s in zip(weights, scales)]).div_(total)


def normalized_weighted_sum(vectors: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """Σ_i (w_i / Σ_j w_j) x_i: each weight normalised before it multiplies its vector.

    Raises:
        ValueError: the weights do not sum to a positive number.
    """
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"a weighted average needs a positive total weight, got weights {list(weights)}")
    return weighted_sum(vectors, [w / total for w in weights])
