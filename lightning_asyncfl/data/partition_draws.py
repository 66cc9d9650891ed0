"""The random draws of the built-in partitions, as pure numpy functions.

Each takes what it draws from and a ``numpy.random.Generator`` and returns arrays: no
validation, no config keys (the partitions in :mod:`lightning_asyncfl.data.partition` check
their inputs and name the keys), so tests can call the maths directly.
"""

from __future__ import annotations

import numpy as np

__all__ = ["balanced_holders", "dirichlet_draw", "proportional_sizes"]


def proportional_sizes(weights: np.ndarray, total: int) -> np.ndarray:
    """Integer sizes proportional to ``weights``, each >= 1, summing to exactly ``total``.

    Every client first gets 1 sample; the other ``total - K`` are shared in proportion to
    the weights, rounded down, and the samples still left go one each to the largest
    fractional parts (ties to the lower index: the largest remainder method). Sizes keep
    the order of the weights: ``w_i >= w_j`` gives ``size_i >= size_j``.

    Args:
        weights: one finite weight > 0 per client, shape ``(K,)``.
        total: the number of samples to share; >= K.

    Returns:
        int64 sizes, shape ``(K,)``.
    """
    weights = np.asarray(weights, dtype=np.float64)
    k = len(weights)
    if total < k:
        raise ValueError(f"cannot give each of {k} clients a sample out of {total}")
    share = (total - k) * weights / weights.sum()
    sizes = np.floor(share).astype(np.int64)
    left = total - k - int(sizes.sum())
    sizes[np.argsort(-(share - sizes), kind="stable")[:left]] += 1
    return sizes + 1


def dirichlet_draw(by_class: list[np.ndarray], num_clients: int, beta: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One draw of :class:`~lightning_asyncfl.data.partition.Dirichlet` as ``(indices, sizes)``,
    indices grouped by client (class by class within a client).

    ``by_class`` holds each class's sample indices. Per class: shuffle its samples, draw
    p ~ Dir(β) over the clients and cut the shuffled samples at the rounded cumulative
    shares (rounded, not floored: no client collects the rounding remainders); the piece
    between cuts k-1 and k is client k's. Whole-array operations only: no Python object
    per client.
    """
    shuffled, owners = [], []
    clients = np.arange(num_clients, dtype=np.int64)
    for idx in by_class:
        idx = rng.permutation(idx)
        p = rng.dirichlet(np.full(num_clients, beta))
        bounds = np.empty(num_clients + 1, dtype=np.int64)
        bounds[0], bounds[-1] = 0, len(idx)
        bounds[1:-1] = np.rint(np.cumsum(p) * len(idx)).astype(np.int64)[:-1]
        shuffled.append(idx)
        owners.append(np.repeat(clients, np.diff(bounds)))
    owner = np.concatenate(owners)
    order = np.argsort(owner, kind="stable")  # by client, each client's pieces in class order
    return np.concatenate(shuffled)[order], np.bincount(owner, minlength=num_clients).astype(np.int64)


def balanced_holders(per_client: np.ndarray, num_classes: int, rng: np.random.Generator) -> list[list[int]]:
    """The clients holding each class when client k takes ``per_client[k]`` classes (clients in turn).

    Client 0, 1, ..., K-1 in turn takes its distinct classes among the least used so far,
    ties broken at random (balanced random choice), so every class is held by
    ``floor(sum / C)`` or ``ceil(sum / C)`` clients.

    Returns:
        for each class, its holders in increasing client order.
    """
    used = np.zeros(num_classes, dtype=np.int64)
    holders: list[list[int]] = [[] for _ in range(num_classes)]
    for k, n_k in enumerate(per_client):
        chosen = np.argsort(used + rng.random(num_classes), kind="stable")[:n_k]
        used[chosen] += 1
        for c in chosen:
            holders[c].append(k)
    return holders
