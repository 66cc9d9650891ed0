"""SVHN: 32×32 colour crops of house-number digits, read by torchvision from .mat files.

Netzer, Wang, Coates, Bissacco, Wu, Ng. "Reading Digits in Natural Images with
Unsupervised Feature Learning", NIPS Workshop 2011, http://ufldl.stanford.edu/housenumbers/:
73,257 training and 26,032 test images of 10 classes (the ``extra`` split is not used).
torchvision reads ``<root>/train_32x32.mat`` and ``<root>/test_32x32.mat`` (directly in
``root``), checks their MD5 against the official files, and maps the label 10 to the
digit 0. Samples are (3, 32, 32) in [0, 1], normalised with the training set's per-channel
mean and std unless ``normalize=false``. No augmentation: a flipped digit is another symbol.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torchvision.datasets as tvd
from torch import Tensor

from lightning_asyncfl.data.vision import TorchvisionDataModule


class SVHN(TorchvisionDataModule):
    """SVHN's train and test splits from ``<root>/{train,test}_32x32.mat``, samples (3, 32, 32).

    Args:
        num_clients: how many clients share the training set; >= 1.
        root: the directory holding the .mat files; relative to the current working directory.
        download: let torchvision download the missing files (needs internet).
        normalize: normalise with the training set's per-channel mean and std.
        input_shape: must be ``[3, 32, 32]``.
        num_classes: at least 10.
        partition: how to split the training set; ``IID()`` when ``None``.
        seed: the run's seed.
    """

    name = "SVHN"
    torchvision_class = tvd.SVHN
    default_input_shape = (3, 32, 32)
    default_num_classes = 10
    mean = (0.4377, 0.4438, 0.4728)
    std = (0.1980, 0.2010, 0.1970)

    def _open(self, train: bool) -> Any:
        cls = tvd.SVHN if self.check_integrity else _SVHNWithoutMD5
        return cls(self.root, split="train" if train else "test", download=self.download)

    def _expected_files(self) -> tuple[str, list[str]]:
        return self.root, [tvd.SVHN.split_list[split][1] for split in ("train", "test")]

    def _arrays(self, dataset: Any) -> tuple[Tensor, Tensor]:
        return torch.from_numpy(np.asarray(dataset.data)), torch.as_tensor(np.asarray(dataset.labels, dtype=np.int64))


class _SVHNWithoutMD5(tvd.SVHN):
    """torchvision's SVHN that checks only that its file exists (``check_integrity=false``); SciPy reads the .mat."""

    def _check_integrity(self) -> bool:
        return os.path.isfile(os.path.join(self.root, self.filename))
