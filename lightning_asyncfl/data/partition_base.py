"""Partition: the contract every partition keeps, and the packed form of a split.

The public :meth:`Partition.__call__` (and :meth:`Partition.packed`, the same split as two
arrays) checks the inputs, calls the subclass's :meth:`Partition._split` (or
:meth:`Partition._split_packed`) and checks the result: ``num_clients`` pairwise
disjoint parts, every index inside the training set, each part sorted. The built-in
partitions are in :mod:`lightning_asyncfl.data.partition`, which also exports this class.

Error keys are relative to the partition's config node (``client_test_fraction``),
except ``num_clients``, which belongs to the data node.
"""

from __future__ import annotations

import abc
from numbers import Integral, Real

import numpy as np

from lightning_asyncfl.errors import require

__all__ = ["Partition"]


class Partition(abc.ABC):
    """Base class: validate, call :meth:`_split`, return sorted int64 index arrays.

    Args:
        client_test_fraction: the share of each client's own samples held out as that
            client's local test data (used by per-client evaluation, ``eval.clients_every``);
            in ``[0, 1)``, 0 for none. The data module draws the split after partitioning,
            from the ``CLIENT_TEST`` stream; a client keeps at least one training sample.
    """

    client_test_fraction: float = 0.0

    def __init__(self, *, client_test_fraction: float = 0.0) -> None:
        require(
            isinstance(client_test_fraction, Real) and not isinstance(client_test_fraction, bool) and 0 <= client_test_fraction < 1,
            "client_test_fraction", client_test_fraction, "in [0, 1)",
        )  # fmt: skip
        self.client_test_fraction = float(client_test_fraction)

    def __call__(
        self,
        targets: np.ndarray,
        num_clients: int,
        rng: np.random.Generator,
        groups: np.ndarray | None = None,
    ) -> list[np.ndarray]:
        """Split the sample indices ``0 .. len(targets) - 1`` among ``num_clients`` clients.

        Args:
            targets: the label of each training sample, shape ``(n,)``.
            num_clients: how many clients to split into; in ``[1, n]``.
            rng: the partition's random stream; the only randomness used.
            groups: the natural owner of each sample (``0 .. G - 1``), or ``None``.

        Returns:
            ``num_clients`` sorted, pairwise disjoint int64 arrays of sample indices.

        Raises:
            InvalidValue: ``num_clients`` (or a partition parameter) is out of range.
        """
        flat, offsets = self.packed(targets, num_clients, rng, groups)  # checks the inputs and the result
        return np.split(flat, offsets[1:-1])

    def packed(
        self,
        targets: np.ndarray,
        num_clients: int,
        rng: np.random.Generator,
        groups: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The split of :meth:`__call__`, packed: client ``k`` holds ``flat[offsets[k]:offsets[k + 1]]``.

        The same draws and the same clients as ``__call__``, without one array per client:
        with a million clients, the packed form is two arrays, made by whole-array numpy
        operations (``flat`` int64, sorted within each client; ``offsets`` int64, length
        ``num_clients + 1``).
        """
        targets = np.asarray(targets)
        if targets.ndim != 1:
            raise ValueError(f"targets must be one-dimensional, got shape {targets.shape}")
        n = len(targets)
        require(isinstance(num_clients, Integral) and num_clients >= 1, "num_clients", num_clients, "an integer >= 1")
        num_clients = int(num_clients)
        require(num_clients <= n, "num_clients", num_clients, f"<= the number of training samples ({n})")
        if groups is not None:
            groups = np.asarray(groups)
            if groups.shape != targets.shape:
                raise ValueError(f"groups must have the shape of targets {targets.shape}, got {groups.shape}")
        indices, sizes = self._split_packed(targets, num_clients, rng, groups)
        indices, sizes = np.asarray(indices, dtype=np.int64), np.asarray(sizes, dtype=np.int64)
        if len(sizes) != num_clients:
            raise RuntimeError(f"{self!r} returned {len(sizes)} parts for {num_clients} clients")
        owner = np.repeat(np.arange(num_clients, dtype=np.int64), sizes)
        flat = indices[np.lexsort((indices, owner))]  # grouped by client, sorted within each
        offsets = np.zeros(num_clients + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        self._check_flat(flat, n)
        return flat, offsets

    def _split_packed(
        self,
        targets: np.ndarray,
        num_clients: int,
        rng: np.random.Generator,
        groups: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The split as ``(indices, sizes)``: the first ``sizes[0]`` indices are client 0's, and so on.

        By default packs :meth:`_split`'s arrays; a partition that can draw its split with
        whole-array operations writes this instead (IID, Dirichlet).
        """
        parts = [np.asarray(p, dtype=np.int64).reshape(-1) for p in self._split(targets, num_clients, rng, groups)]
        if len(parts) != num_clients:
            raise RuntimeError(f"{self!r} returned {len(parts)} parts for {num_clients} clients")
        sizes = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
        return (np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)), sizes

    @abc.abstractmethod
    def _split(
        self,
        targets: np.ndarray,
        num_clients: int,
        rng: np.random.Generator,
        groups: np.ndarray | None,
    ) -> list[np.ndarray]:
        """The split itself: ``num_clients`` disjoint index arrays (inputs already checked)."""

    def _check(self, parts: list[np.ndarray], num_clients: int, n: int) -> None:
        if len(parts) != num_clients:
            raise RuntimeError(f"{self!r} returned {len(parts)} parts for {num_clients} clients")
        self._check_flat(np.concatenate(parts) if parts else np.empty(0, dtype=np.int64), n)

    def _check_flat(self, everything: np.ndarray, n: int) -> None:
        if everything.size and (everything.min() < 0 or everything.max() >= n):
            raise RuntimeError(f"{self!r} returned indices outside [0, {n})")
        if np.bincount(everything, minlength=n).max(initial=0) > 1:
            raise RuntimeError(f"{self!r} gave a sample to more than one client")

    def __repr__(self) -> str:
        shown = {k: v for k, v in vars(self).items() if not k.startswith("_") and not (k == "client_test_fraction" and v == 0)}
        args = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return f"{type(self).__name__}({args})"
