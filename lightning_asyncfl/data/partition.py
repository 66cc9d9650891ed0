"""Partitions: split one training set into ``num_clients`` disjoint index lists.

Every partition is a pure function of ``(targets, num_clients, rng, groups)``: the same
generator state gives the same split, bit for bit. The public :meth:`Partition.__call__`
validates the inputs and the result; a subclass writes only :meth:`Partition._split`.

- :class:`IID`: a random permutation cut into near-equal parts.
- :class:`Dirichlet`: label skew, each class spread over the clients with proportions
  drawn from Dir(β) (Hsu, Qi, Brown 2019, https://arxiv.org/abs/1909.06335; Yurochkin et
  al. 2019, https://arxiv.org/abs/1905.12022).
- :class:`Shards`: sort by label, cut into shards, deal each client a few (McMahan et al.
  2017, https://arxiv.org/abs/1602.05629, Section 3).
- :class:`Natural`: each client is one natural owner of the data (a device, a writer).
- :class:`LabelsPerClient`: each client holds exactly ``k`` classes (Li, Diao, Chen, He
  2022, NIID-Bench's "#C=k", https://arxiv.org/abs/2102.02079), or the original
  framework's stepped label groups.
- :class:`QuantitySkew`: IID labels, unequal client sizes: uniform in ``[min, max]`` or a
  power law (LEAF, Caldas et al. 2018, https://arxiv.org/abs/1812.01097; FedProx, Li et al.
  2020, https://arxiv.org/abs/1812.06127).

Error keys are relative to the partition's config node (``beta``), except ``num_clients``,
which belongs to the data node.

The base class is in :mod:`lightning_asyncfl.data.partition_base` and the draws as pure
functions in :mod:`lightning_asyncfl.data.partition_draws`; both are exported here. The
six built-in partitions stay together in this module (a little over 350 lines): a
partition object given to :func:`lightning_asyncfl.api.fit` is recorded under its class's
module path, which a resumed run checks, so moving one would change a run's recorded
config and refuse to resume runs started before.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Integral, Real
from typing import Any

import numpy as np

from lightning_asyncfl.data.partition_base import Partition
from lightning_asyncfl.data.partition_draws import balanced_holders, dirichlet_draw, proportional_sizes
from lightning_asyncfl.errors import ConfigError, InvalidValue, checking, require

__all__ = ["Partition", "IID", "Dirichlet", "Shards", "Natural", "LabelsPerClient", "QuantitySkew", "proportional_sizes"]


class IID(Partition):
    """A uniformly random split into near-equal parts (sizes differ by at most one)."""

    def _split(self, targets, num_clients, rng, groups):
        return np.array_split(rng.permutation(len(targets)), num_clients)

    def _split_packed(self, targets, num_clients, rng, groups):
        n = len(targets)  # np.array_split's sizes: the first n % num_clients parts hold one more
        sizes = np.full(num_clients, n // num_clients, dtype=np.int64)
        sizes[: n % num_clients] += 1
        return rng.permutation(n), sizes


class Dirichlet(Partition):
    """Label skew: each class's samples spread over the clients with proportions ~ Dir(β).

    For each class c, draw p_c ~ Dir(β, ..., β) over the clients and give client k the
    share p_c,k of the class's shuffled samples. The whole draw is repeated until every
    client holds at least ``min_samples`` samples. Small β gives few classes per client;
    large β approaches IID.

    Args:
        beta: concentration β of the Dirichlet distribution; > 0.
        min_samples: the fewest samples any client may get; >= 0.
        max_tries: how many draws to try before giving up; >= 1.
    """

    def __init__(self, *, beta: float = 0.5, min_samples: int = 10, max_tries: int = 1000, client_test_fraction: float = 0.0) -> None:
        super().__init__(client_test_fraction=client_test_fraction)
        require(isinstance(beta, Real) and beta > 0, "beta", beta, "> 0")
        require(isinstance(min_samples, Integral) and min_samples >= 0, "min_samples", min_samples, "an integer >= 0")
        require(isinstance(max_tries, Integral) and max_tries >= 1, "max_tries", max_tries, "an integer >= 1")
        self.beta = float(beta)
        self.min_samples = int(min_samples)
        self.max_tries = int(max_tries)

    def _split(self, targets, num_clients, rng, groups):
        indices, sizes = self._split_packed(targets, num_clients, rng, groups)
        return np.split(indices, np.cumsum(sizes)[:-1])

    def _split_packed(self, targets, num_clients, rng, groups):
        n = len(targets)
        if num_clients * self.min_samples > n:
            most = n // self.min_samples if self.min_samples else n
            raise InvalidValue(
                "min_samples",
                self.min_samples,
                f"<= {n // num_clients} (the {n} training samples shared by {num_clients} clients); "
                f"lower partition.min_samples to {n // num_clients} or less, or use data.num_clients={most} or fewer",
            )
        by_class = [np.flatnonzero(targets == c) for c in np.unique(targets)]
        best = -1
        for _ in range(self.max_tries):
            indices, sizes = dirichlet_draw(by_class, num_clients, self.beta, rng)
            smallest = int(sizes.min())
            if smallest >= self.min_samples:
                return indices, sizes
            best = max(best, smallest)
        raise InvalidValue("min_samples", self.min_samples, self._advice(by_class, n, num_clients, best, rng))

    def _reaches(self, by_class: list[np.ndarray], num_clients: int, beta: float, rng: np.random.Generator, tries: int = 20) -> bool:
        return any(int(dirichlet_draw(by_class, num_clients, beta, rng)[1].min()) >= self.min_samples for _ in range(tries))

    def _advice(self, by_class: list[np.ndarray], n: int, num_clients: int, best: int, rng: np.random.Generator) -> str:
        """What to change, with numbers that a few more draws confirmed where they could."""
        options = [f"lower partition.min_samples to {best} (the best of the {self.max_tries} draws)"]
        beta = next((b for b in (self.beta * 2**i for i in range(1, 8)) if self._reaches(by_class, num_clients, b, rng)), None)
        if beta is not None:
            options.append(f"raise partition.beta to {beta:g} (a draw reached it)")
        else:
            options.append("raise partition.beta (a larger beta spreads each class more evenly)")
        fewer = next((k for k in (num_clients // 2**i for i in range(1, 8)) if k >= 1 and self._reaches(by_class, k, self.beta, rng)), None)
        if fewer is not None:
            options.append(f"use data.num_clients={fewer} (a draw reached it)")
        else:
            options.append("use fewer clients")
        return (
            f"reachable: no Dir(beta={self.beta:g}) split in {self.max_tries} tries gave each of the {num_clients} clients "
            f"{self.min_samples} samples ({n} samples, {n / num_clients:g} per client on average); " + ", ".join(options[:-1]) + ", or " + options[-1]
        )

class Shards(Partition):
    """Pathological non-IID: sort by label, cut into shards, deal ``shards_per_client`` each.

    The indices, stably sorted by label, are cut into ``num_clients * shards_per_client``
    contiguous shards of near-equal size; a random permutation assigns the shards.

    Args:
        shards_per_client: shards dealt to each client; >= 1.
    """

    def __init__(self, *, shards_per_client: int = 2, client_test_fraction: float = 0.0) -> None:
        super().__init__(client_test_fraction=client_test_fraction)
        require(
            isinstance(shards_per_client, Integral) and shards_per_client >= 1,
            "shards_per_client",
            shards_per_client,
            "an integer >= 1",
        )
        self.shards_per_client = int(shards_per_client)

    def _split(self, targets, num_clients, rng, groups):
        n = len(targets)
        s = self.shards_per_client
        require(
            num_clients * s <= n,
            "shards_per_client",
            s,
            f"<= {n // num_clients} (at least one sample per shard: {n} samples, {num_clients} clients)",
        )
        shards = np.array_split(np.argsort(targets, kind="stable"), num_clients * s)
        order = rng.permutation(num_clients * s)
        return [np.concatenate([shards[j] for j in order[k * s : (k + 1) * s]]) for k in range(num_clients)]


class Natural(Partition):
    """The data's own split: client k gets the samples whose group (owner, device) is k.

    Needs a dataset with natural groups (e.g. ``data=synthetic``) and ``num_clients`` equal
    to the number of groups. Uses no randomness.
    """

    def _split(self, targets, num_clients, rng, groups):
        if groups is None:
            raise ConfigError(["partition=natural needs a dataset with natural groups (e.g. data=synthetic); this dataset has none"])
        groups = groups.astype(np.int64, copy=False)
        if groups.size and groups.min() < 0:
            raise ValueError(f"groups must be >= 0, got {int(groups.min())}")
        num_groups = int(groups.max()) + 1 if groups.size else 0
        require(
            num_clients == num_groups,
            "num_clients",
            num_clients,
            f"the number of natural groups in the dataset ({num_groups}) for partition=natural",
        )
        order = np.argsort(groups, kind="stable")
        bounds = np.cumsum(np.bincount(groups, minlength=num_groups))[:-1]
        return np.split(order, bounds)


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


class LabelsPerClient(Partition):
    """Label skew by class count: every client holds exactly ``labels_per_client`` classes.

    NIID-Bench's "#C=k" (Li, Diao, Chen, He, "Federated Learning on Non-IID Data Silos: An
    Experimental Study", ICDE 2022, https://arxiv.org/abs/2102.02079, Section 4.1), the
    class-count form of McMahan et al.'s pathological non-IID split.

    Classes: clients 0, 1, ..., K-1 in turn each take their k distinct classes among the
    least used so far, ties broken at random (balanced random choice). So every class is
    held by ``floor(K k / C)`` or ``ceil(K k / C)`` clients, and all C classes are used
    whenever ``K k >= C``. Samples: each class's samples are shuffled and split with
    ``np.array_split`` among its holders, taken in a random order (sizes differ by at most
    one). Every sample of a held class is assigned once; classes nobody holds stay unused.

    With ``counts`` (the original framework's customised label groups): clients
    ``0 .. counts[0]-1`` form group 0, the next ``counts[1]`` group 1, and so on; each
    client of group g (0-based) holds ``(g + 1) * step`` classes. ``labels_per_client``
    is then unused.

    Args:
        labels_per_client: k, the classes of every client; an integer in [1, C].
        step: classes added per group; an integer >= 1, set exactly when ``counts`` is,
            with ``len(counts) * step <= C``.
        counts: clients per group, group 0 first; integers >= 0 summing to the number of
            clients.

    Raises:
        InvalidValue: a key is out of range, or a class has fewer samples than clients
            holding it (use fewer clients or fewer labels per client).
    """

    def __init__(
        self, *, labels_per_client: int = 2, step: int | None = None, counts: list[int] | None = None,
        client_test_fraction: float = 0.0,
    ) -> None:
        super().__init__(client_test_fraction=client_test_fraction)
        with checking() as check:
            check(_is_int(labels_per_client) and labels_per_client >= 1, "labels_per_client", labels_per_client, "an integer >= 1")
            if step is not None:
                check(_is_int(step) and step >= 1, "step", step, "an integer >= 1")
                check(counts is not None, "counts", counts, "a list of clients per group when step is set")
            items: list[int] | None = None
            if counts is not None:
                check(step is not None, "step", step, "an integer >= 1 when counts is set")
                if isinstance(counts, (str, bytes)) or not isinstance(counts, Iterable):
                    check(False, "counts", counts, "a list of clients per group (integers >= 0)")
                else:
                    items = list(counts)
                    check(len(items) >= 1, "counts", items, "a non-empty list of clients per group")
                    for i, c in enumerate(items):
                        check(_is_int(c) and c >= 0, f"counts[{i}]", c, "an integer >= 0")
        self.labels_per_client = int(labels_per_client)
        self.step = None if step is None else int(step)
        self.counts = None if items is None else [int(c) for c in items]

    def classes_per_client(self, num_clients: int, num_classes: int) -> np.ndarray:
        """How many classes each client holds, client 0 first (checks the keys against the data)."""
        if self.counts is None:
            require(
                self.labels_per_client <= num_classes,
                "labels_per_client",
                self.labels_per_client,
                f"<= the number of classes in the training set ({num_classes})",
            )
            return np.full(num_clients, self.labels_per_client, dtype=np.int64)
        require(
            sum(self.counts) == num_clients,
            "counts",
            self.counts,
            f"clients per group that sum to the number of clients ({num_clients}), not {sum(self.counts)}",
        )
        require(
            len(self.counts) * self.step <= num_classes,
            "step",
            self.step,
            f"<= {num_classes // len(self.counts)}: the last of {len(self.counts)} groups holds "
            f"{len(self.counts)} * step classes, at most the {num_classes} classes in the training set",
        )
        return np.repeat((np.arange(len(self.counts)) + 1) * self.step, self.counts).astype(np.int64)

    def _split(self, targets, num_clients, rng, groups):
        classes = np.unique(targets)
        per_client = self.classes_per_client(num_clients, len(classes))
        holders = balanced_holders(per_client, len(classes), rng)
        key = "labels_per_client" if self.counts is None else "step"
        value = self.labels_per_client if self.counts is None else self.step
        pieces: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c, clients in enumerate(holders):
            if not clients:
                continue
            idx = rng.permutation(np.flatnonzero(targets == classes[c]))
            require(
                len(idx) >= len(clients),
                key,
                value,
                f"small enough that every class has a sample for each client holding it: class "
                f"{classes[c]} has {len(idx)} samples for {len(clients)} clients (use fewer clients or classes per client)",
            )
            for k, piece in zip(rng.permutation(clients), np.array_split(idx, len(clients))):
                pieces[k].append(piece)
        return [np.concatenate(p) if p else np.empty(0, dtype=np.int64) for p in pieces]


class QuantitySkew(Partition):
    """Quantity skew: IID labels, unequal client sizes.

    Two modes; set exactly one:

    - uniform: client k draws its size uniformly among the integers in
      ``[min_samples, max_samples]``;
    - power law (Zipf-like, the heavy-tailed client sizes of LEAF, Caldas et al. 2018,
      https://arxiv.org/abs/1812.01097, and FedProx, Li et al. 2020,
      https://arxiv.org/abs/1812.06127): a random permutation gives each client a rank
      r = 1..K and a weight r^-a (a = ``power_law``); the sizes share all n samples in
      proportion to the weights (:func:`proportional_sizes`), so the rank-1 client is the
      largest and sizes never grow with the rank. a = 0 gives equal sizes.

    If uniform sizes add up to more than the n training samples, they are scaled down to
    share exactly n with :func:`proportional_sizes` (every client keeps >= 1 sample; the
    bounds then hold only in proportion). Otherwise the ``n - sum`` samples left over stay
    unused. A random permutation of the samples is then cut into the clients' sizes.

    Args:
        min_samples: the smallest uniform size; an integer >= 1 (uniform mode).
        max_samples: the largest uniform size; an integer >= ``min_samples`` (uniform mode).
        power_law: the exponent a; a finite number >= 0 (power-law mode).
    """

    def __init__(
        self, *, min_samples: int | None = None, max_samples: int | None = None, power_law: float | None = None,
        client_test_fraction: float = 0.0,
    ) -> None:
        super().__init__(client_test_fraction=client_test_fraction)
        modes = "set exactly one mode: min_samples and max_samples, or power_law"
        with checking() as check:
            if power_law is None:
                if min_samples is None and max_samples is None:
                    check(False, "power_law", power_law, f"a number >= 0 when min_samples and max_samples are null ({modes})")
                elif min_samples is None:
                    check(False, "min_samples", min_samples, f"an integer >= 1 when max_samples is set ({modes})")
                elif max_samples is None:
                    check(False, "max_samples", max_samples, f"an integer >= min_samples when min_samples is set ({modes})")
            else:
                check(
                    isinstance(power_law, Real) and not isinstance(power_law, bool) and math.isfinite(power_law) and power_law >= 0,
                    "power_law",
                    power_law,
                    "a finite number >= 0",
                )
                for key, value in (("min_samples", min_samples), ("max_samples", max_samples)):
                    check(value is None, key, value, f"null when power_law is set ({modes})")
            if min_samples is not None:
                check(_is_int(min_samples) and min_samples >= 1, "min_samples", min_samples, "an integer >= 1")
            if max_samples is not None:
                ok = _is_int(max_samples) and max_samples >= 1
                if ok and _is_int(min_samples):
                    check(max_samples >= min_samples, "max_samples", max_samples, f">= min_samples ({min_samples})")
                else:
                    check(ok, "max_samples", max_samples, "an integer >= 1")
        self.min_samples = None if min_samples is None else int(min_samples)
        self.max_samples = None if max_samples is None else int(max_samples)
        self.power_law = None if power_law is None else float(power_law)

    def sizes(self, n: int, num_clients: int, rng: np.random.Generator) -> np.ndarray:
        """Each client's number of samples, client 0 first: each >= 1, summing to <= ``n``."""
        if self.power_law is not None:
            ranks = rng.permutation(num_clients) + 1
            return proportional_sizes(ranks.astype(np.float64) ** -self.power_law, n)
        sizes = rng.integers(self.min_samples, self.max_samples, size=num_clients, endpoint=True)
        return proportional_sizes(sizes, n) if sizes.sum() > n else sizes.astype(np.int64)

    def _split(self, targets, num_clients, rng, groups):
        sizes = self.sizes(len(targets), num_clients, rng)
        order = rng.permutation(len(targets))
        return np.split(order[: sizes.sum()], np.cumsum(sizes)[:-1])
