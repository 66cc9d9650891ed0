"""scikit-learn's 8x8 handwritten digits: 1,797 images of 10 classes, shipped with scikit-learn.

Small enough for tests and quick experiments on a CPU, and needs no download
(:func:`sklearn.datasets.load_digits`). Pixels are scaled from 0..16 to [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

import numpy as np
from torch.utils.data import Dataset

from lightning_asyncfl import seeding
from lightning_asyncfl.data.datamodule import FederatedDataModule, stratified_split, tensor_dataset
from lightning_asyncfl.data.partition import Partition
from lightning_asyncfl.errors import require


class Digits(FederatedDataModule):
    """The 8x8 digits, samples shaped (1, 8, 8) in [0, 1], split train/test per class.

    Args:
        num_clients: how many clients share the training set; >= 1.
        test_fraction: the share of each class held out for the test set; in (0, 1).
        input_shape: must be ``[1, 8, 8]``.
        num_classes: must be at least 10.
        partition: how to split the training set; ``IID()`` when ``None``.
        seed: the run's seed; the train/test split uses ``stream(seed, PARTITION, 1)``.
    """

    _repr_fields = ("test_fraction",)

    def __init__(
        self,
        *,
        num_clients: int,
        test_fraction: float = 0.2,
        input_shape: Sequence[int] = (1, 8, 8),
        num_classes: int = 10,
        partition: Partition | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            num_clients=num_clients, input_shape=input_shape, num_classes=num_classes, partition=partition, seed=seed
        )
        require(isinstance(test_fraction, Real) and 0 < test_fraction < 1, "test_fraction", test_fraction, "in (0, 1)")
        self.test_fraction = float(test_fraction)

    def load(self) -> tuple[Dataset, Dataset, None]:
        """The stratified train/test split of the digits; no natural groups."""
        from sklearn.datasets import load_digits  # scikit-learn's import takes a second: only when the data is read

        x, y = load_digits(return_X_y=True)
        x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
        y = y.astype(np.int64)
        train, test = stratified_split(y, self.test_fraction, seeding.stream(self.seed, seeding.PARTITION, 1))
        return tensor_dataset(x[train], y[train]), tensor_dataset(x[test], y[test]), None
