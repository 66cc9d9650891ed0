"""FederatedDataModule: one shared training set, partitioned once into client index lists.

A client is an index list into the shared training set until it runs, so memory grows
with the dataset, never with the number of clients. A dataset subclass writes only
:meth:`FederatedDataModule.load`; :meth:`FederatedDataModule.setup` checks what it loaded
against the config (sample shape, labels, number of clients) and partitions it with the
run's partition stream.
"""

from __future__ import annotations

import abc

from collections.abc import Sequence
from numbers import Integral

import lightning
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from lightning_asyncfl import seeding
from lightning_asyncfl.data.packed import PackedIndices
from lightning_asyncfl.data.partition import IID, Partition
from lightning_asyncfl.errors import ConfigError, InvalidValue, InvalidValues, require


def stratified_split(
    targets: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into train and test, class by class.

    Each class c with n_c samples sends ``round(test_fraction * n_c)`` of them, chosen by
    ``rng``, to the test set (at most n_c - 1, so every class keeps a training sample).

    Args:
        targets: the label of each sample, shape ``(n,)``.
        test_fraction: the share of each class held out; in (0, 1).
        rng: the split's random stream.

    Returns:
        ``(train_indices, test_indices)``, each sorted int64.
    """
    targets = np.asarray(targets)
    train, test = [], []
    for c in np.unique(targets):
        idx = rng.permutation(np.flatnonzero(targets == c))
        n_test = min(int(round(test_fraction * len(idx))), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)).astype(np.int64), np.sort(np.concatenate(test)).astype(np.int64)


def client_test_split(parts: Sequence[np.ndarray], fraction: float, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Split each client's indices into its training and its local test part.

    Client k's indices are shuffled by ``stream(seed, CLIENT_TEST, k)`` and
    ``min(round(fraction * n_k), n_k - 1)`` of them become its test part (a client keeps at
    least one training sample).

    Returns:
        ``(train_parts, test_parts)``, one sorted int64 array per client each.
    """
    train, test = [], []
    for k, part in enumerate(parts):
        order = seeding.stream(seed, seeding.CLIENT_TEST, k).permutation(np.asarray(part, dtype=np.int64))
        n_test = max(0, min(int(round(fraction * len(order))), len(order) - 1))
        test.append(np.sort(order[:n_test]))
        train.append(np.sort(order[n_test:]))
    return train, test


def _subset(dataset: Dataset, indices: np.ndarray) -> Dataset:
    """``dataset[indices]``: a gathered ``TensorDataset`` (the evaluator's fast path) or a ``Subset``."""
    if isinstance(dataset, TensorDataset):
        idx = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        return TensorDataset(*(t[idx] for t in dataset.tensors))
    return Subset(dataset, np.asarray(indices).tolist())


def tensor_dataset(features: np.ndarray, labels: np.ndarray, *, dtype: torch.dtype = torch.float32) -> TensorDataset:
    """A ``TensorDataset`` of features (float32, or ``dtype``: int64 for token ids) and int64 labels."""
    return TensorDataset(
        torch.as_tensor(np.ascontiguousarray(features), dtype=dtype),
        torch.as_tensor(np.ascontiguousarray(labels), dtype=torch.int64),
    )


def _sample_shape(dataset: Dataset) -> tuple[int, ...]:
    if isinstance(dataset, TensorDataset):
        return tuple(dataset.tensors[0].shape[1:])
    return tuple(torch.as_tensor(dataset[0][0]).shape)


def _targets(dataset: Dataset) -> np.ndarray:
    if isinstance(dataset, TensorDataset):
        labels = dataset.tensors[1].numpy()
    elif hasattr(dataset, "targets"):
        labels = np.asarray(dataset.targets)
    else:
        labels = np.asarray([int(dataset[i][1]) for i in range(len(dataset))])
    return labels.astype(np.int64, copy=False)


class FederatedDataModule(lightning.LightningDataModule, abc.ABC):
    """One shared training set partitioned into ``num_clients`` index lists, plus a test set.

    After :meth:`setup`: ``train_dataset``, ``test_dataset``, ``train_targets`` (int64
    labels of the training set), ``client_indices`` (one int64 tensor per client, a
    sequence of views into one flat tensor unless each client's own test split is drawn) and
    ``num_samples`` (one count per client); with a validation split
    (:meth:`hold_out_validation`), ``val_indices`` (int64, into the training set, no
    client's) and ``val_dataset``; with per-client test data, ``client_test_source``
    (the dataset the indices point into) and ``client_test_indices`` (one int64 tensor
    per client into it), both None when there is none. A dataset with its own per-client
    test data (LEAF's per-user split) sets these two in :meth:`load`.

    Args:
        num_clients: how many clients share the training set; >= 1.
        input_shape: the shape of one sample (without the batch dimension).
        num_classes: the number of classes; every label is in ``[0, num_classes)``.
        partition: how to split the training set; ``IID()`` when ``None``.
        seed: the run's seed; the split and the partition draw from its partition stream.
    """

    _repr_fields: tuple[str, ...] = ()  # a subclass's own settings, shown by __repr__

    def __init__(
        self,
        *,
        num_clients: int,
        input_shape: Sequence[int],
        num_classes: int,
        partition: Partition | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        require(isinstance(num_clients, Integral) and num_clients >= 1, "num_clients", num_clients, "an integer >= 1")
        shape = tuple(input_shape)
        require(
            len(shape) >= 1 and all(isinstance(d, Integral) and d >= 1 for d in shape),
            "input_shape",
            list(shape),
            "a non-empty list of positive integers",
        )
        require(isinstance(num_classes, Integral) and num_classes >= 1, "num_classes", num_classes, "an integer >= 1")
        self.num_clients = int(num_clients)
        self.input_shape = tuple(int(d) for d in shape)
        self.num_classes = int(num_classes)
        self.partition = partition if partition is not None else IID()
        self.seed = int(seed)
        self.train_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None
        self.train_targets: np.ndarray | None = None
        self.client_indices: list[torch.Tensor] = []
        self.num_samples: list[int] = []
        self.val_fraction = 0.0
        self._kept: np.ndarray | None = None  # during setup: the training samples outside the validation split
        self.val_indices: torch.Tensor | None = None
        self.val_dataset: Dataset | None = None
        #: each client's local test data: the dataset the indices point into, and one int64
        #: index tensor per client; set by ``partition.client_test_fraction`` or by a dataset
        #: with its own per-client test split (in ``load``); None when there is none
        self.client_test_source: Dataset | None = None
        self.client_test_indices: list[torch.Tensor] | None = None

    def hold_out_validation(self, fraction: float) -> None:
        """Hold ``fraction`` of the training set out as the server's validation split (call before :meth:`setup`).

        The split is stratified by label and drawn from the run's ``VALIDATION`` stream
        before partitioning, so no client ever trains on a validation sample; 0 holds out
        nothing (and partitions exactly as without the call).

        Raises:
            InvalidValue: ``fraction`` is not in ``[0, 1)``.
        """
        require(isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and 0 <= fraction < 1, "val_fraction", fraction, "in [0, 1)")
        self.val_fraction = float(fraction)

    @abc.abstractmethod
    def load(self) -> tuple[Dataset, Dataset, np.ndarray | None]:
        """Subclasses: return (train, test, groups) where groups is per-train-sample natural owner or None.

        Any randomness must come from ``seeding.stream(self.seed, seeding.PARTITION, i)``
        with ``i >= 1`` (``i = 1`` for a train/test split), so loading is deterministic.
        """

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Train-time augmentation of a batch of features (default: none).

        Called by the client trainer on every training batch, on the training device,
        after batching; all randomness must come from ``generator`` (the job's own stream,
        on the CPU), so augmentation is deterministic per job. Return a new tensor.
        """
        return x

    @property
    def has_augmentation(self) -> bool:
        """Whether :meth:`augment` is overridden (the trainer skips the call otherwise)."""
        return type(self).augment is not FederatedDataModule.augment

    def setup(self, stage: str | None = None) -> None:
        """Load, check against the config and partition; later calls do nothing.

        Raises:
            InvalidValue: ``input_shape``, ``num_classes`` or ``num_clients`` does not fit
                the loaded data, or the partition cannot split it.
        """
        if self.train_dataset is not None:
            return
        train, test, groups = self.load()
        for dataset in (train, test):
            actual = _sample_shape(dataset)
            require(
                actual == self.input_shape,
                "input_shape",
                list(self.input_shape),
                f"the dataset's sample shape {list(actual)}",
            )
        targets = _targets(train)
        for labels in (targets, _targets(test)):
            if labels.size and labels.min() < 0:
                raise ValueError(f"{type(self).__name__} loaded a negative label ({int(labels.min())})")
            top = int(labels.max()) if labels.size else -1
            require(top < self.num_classes, "num_classes", self.num_classes, f"> the largest label ({top})")
        keep = np.arange(len(train), dtype=np.int64)  # the training samples the clients share
        val = None
        if self.val_fraction > 0:
            keep, val = stratified_split(targets, self.val_fraction, seeding.stream(self.seed, seeding.VALIDATION))
        self._kept = keep
        n = len(keep)
        require(self.num_clients <= n, "num_clients", self.num_clients, f"<= the number of training samples ({n})")
        fraction = float(getattr(self.partition, "client_test_fraction", 0.0))
        try:
            if fraction == 0 and self._packs():
                self._set_packed(targets, groups)
                self.train_targets, self.test_dataset, self.train_dataset = targets, test, train
                if val is not None:
                    self.val_indices = torch.from_numpy(val)
                    self.val_dataset = _subset(train, val)
                return
            parts = self.split_clients(targets, groups)
        except (InvalidValue, InvalidValues) as error:  # the partition's own keys live under `partition.`
            raise ConfigError([str(p.under("partition")) for p in getattr(error, "problems", [error])]) from error
        if val is not None:  # a split_clients of a subclass may have partitioned every sample: no client gets a validation one
            held = np.zeros(len(train), dtype=bool)
            held[val] = True
            parts = [np.asarray(p, dtype=np.int64)[~held[np.asarray(p, dtype=np.int64)]] for p in parts]
        if fraction > 0:
            if self.client_test_indices is not None:
                raise ConfigError([
                    f"partition.client_test_fraction must be 0 with {type(self).__name__}, which has its own per-client "
                    f"test split, got {fraction}"
                ])  # fmt: skip
            parts, tests = client_test_split(parts, fraction, self.seed)
            self.client_test_source = train
            self.client_test_indices = [torch.from_numpy(t) for t in tests]
        self.train_targets = targets
        self.client_indices = [torch.from_numpy(p) for p in parts]
        self.num_samples = [len(p) for p in parts]
        if val is not None:
            self.val_indices = torch.from_numpy(val)
            self.val_dataset = _subset(train, val)
        self.test_dataset = test
        self.train_dataset = train

    def _packs(self) -> bool:
        """Whether the clients' lists may come packed from the partition (a subclass's own ``split_clients`` wins;
        given index lists point into the whole training set and take the list path, which drops the validation rows)."""
        return (type(self).split_clients is FederatedDataModule.split_clients and hasattr(self.partition, "packed")
                and not getattr(self.partition, "indexes_training_set", False))  # fmt: skip

    def _set_packed(self, targets: np.ndarray, groups: np.ndarray | None) -> None:
        """``client_indices`` as slices of one flat tensor: no Python object per client (a million clients).

        The same clients as :meth:`split_clients`: the partition of the samples outside
        the validation split, mapped back to indices into the training set.
        """
        keep, rng = self._kept, seeding.stream(self.seed, seeding.PARTITION)
        if keep is None or len(keep) == len(targets):
            flat, offsets = self.partition.packed(targets, self.num_clients, rng, groups)
        else:
            flat, offsets = self.partition.packed(targets[keep], self.num_clients, rng, None if groups is None else np.asarray(groups)[keep])
            flat = keep[flat]  # positions among the kept samples -> indices into the training set (keep is sorted)
        self.client_indices = PackedIndices(torch.from_numpy(flat), torch.from_numpy(offsets))
        self.num_samples = np.diff(offsets).tolist()

    def split_clients(self, targets: np.ndarray, groups: np.ndarray | None) -> list[np.ndarray]:
        """The clients' index lists into the training set: the partition on the run's partition stream.

        Only the samples outside the validation split (``eval.val_fraction``) are
        partitioned; setup drops validation samples from whatever this returns. A data
        module whose partition needs more than the labels (a Flower Datasets partitioner
        reads any column of a Hugging Face dataset) overrides this. A partition whose
        indices point into the whole training set (``indexes_training_set``: given index
        lists) sees every sample; setup then drops the validation ones from its lists.
        """
        keep = getattr(self, "_kept", None)
        if keep is None or len(keep) == len(targets) or getattr(self.partition, "indexes_training_set", False):
            return self.partition(targets, self.num_clients, seeding.stream(self.seed, seeding.PARTITION), groups)
        parts = self.partition(targets[keep], self.num_clients, seeding.stream(self.seed, seeding.PARTITION), None if groups is None else np.asarray(groups)[keep])
        return [keep[p] for p in parts]  # positions among the kept samples -> indices into the training set

    def client_dataset(self, k: int) -> Subset:
        """The training samples of client ``k``, as a ``Subset`` of the shared training set."""
        if self.train_dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before client_dataset()")
        if not 0 <= k < self.num_clients:
            raise IndexError(f"client {k} out of range [0, {self.num_clients})")
        return Subset(self.train_dataset, self.client_indices[k].tolist())

    def test_dataloader(self, batch_size: int = 1024) -> DataLoader:
        """The whole test set, in order, in batches of ``batch_size``."""
        if self.test_dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before test_dataloader()")
        return DataLoader(self.test_dataset, batch_size=batch_size, shuffle=False)

    def __repr__(self) -> str:
        extra = "".join(f"{name}={getattr(self, name)!r}, " for name in self._repr_fields)
        return (
            f"{type(self).__name__}(num_clients={self.num_clients}, {extra}input_shape={list(self.input_shape)}, "
            f"num_classes={self.num_classes}, partition={self.partition!r}, seed={self.seed})"
        )

    __str__ = __repr__  # Lightning's __str__ would build every dataloader
