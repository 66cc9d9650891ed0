"""CIFAR-10 and CIFAR-100: 32×32 colour images, read by torchvision from the python pickles.

Krizhevsky. "Learning Multiple Layers of Features from Tiny Images", 2009,
https://www.cs.toronto.edu/~kriz/cifar.html: 50,000 + 10,000 images of 10 classes
(``<root>/cifar-10-batches-py/``) or 100 fine classes (``<root>/cifar-100-python/``).
torchvision checks every file's MD5 against the official release; with
``check_integrity=false`` the files are read without it, by
:func:`~lightning_asyncfl.data.vision.safe_unpickle` (plain values and arrays only).

Samples are (3, 32, 32) in [0, 1], normalised with the training set's per-channel mean and
std unless ``normalize=false``. Training batches get the standard augmentation (He et al.
2016, https://arxiv.org/abs/1512.03385, Section 4.2): a random 32×32 crop of the image
zero-padded by 4 pixels, then a horizontal flip with probability 1/2
(:func:`~lightning_asyncfl.data.vision.random_crop_flip`); the padding is black, i.e. the
normalised value of pixel 0, as with torchvision's ``RandomCrop`` before ``Normalize``.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torchvision.datasets as tvd
from torch import Tensor

from lightning_asyncfl.data.vision import TorchvisionDataModule, random_crop_flip, safe_unpickle
from lightning_asyncfl.errors import require

PADDING = 4  # pixels of padding of the random crop


class CIFAR10(TorchvisionDataModule):
    """CIFAR-10 from ``<root>/cifar-10-batches-py/``, samples (3, 32, 32), crop-and-flip augmentation.

    Args:
        num_clients: how many clients share the training set; >= 1.
        root: the directory holding ``cifar-10-batches-py/``; relative to the current
            working directory.
        download: let torchvision download and extract the archive (needs internet).
        normalize: normalise with the training set's per-channel mean and std.
        augment_train: random crop (padding 4) and horizontal flip of every training batch;
            False: none.
        input_shape: must be ``[3, 32, 32]``.
        num_classes: at least 10.
        partition: how to split the training set; ``IID()`` when ``None``.
        seed: the run's seed.
    """

    name = "CIFAR-10"
    torchvision_class = tvd.CIFAR10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    _repr_fields = (*TorchvisionDataModule._repr_fields, "augment_train")

    default_input_shape = (3, 32, 32)
    default_num_classes = 10

    def __init__(self, *, num_clients: int, augment_train: bool = True, normalize: bool = True, **kwargs: Any) -> None:
        super().__init__(num_clients=num_clients, normalize=normalize, **kwargs)
        require(isinstance(augment_train, bool), "augment_train", augment_train, "true or false")
        self.augment_train = augment_train
        mean, std = torch.tensor(self.mean), torch.tensor(self.std)
        self._fill = -mean / std if normalize else torch.zeros(len(self.mean))  # pixel value 0

    @property
    def has_augmentation(self) -> bool:
        """Whether training batches are augmented (``augment_train``)."""
        return self.augment_train

    def augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Random crop (padding 4) and horizontal flip of each image of the batch; ``x`` when disabled."""
        if not self.augment_train:
            return x
        return random_crop_flip(x, generator, padding=PADDING, flip=True, fill=self._fill)

    def _open(self, train: bool) -> Any:
        """torchvision's dataset; without the MD5 check, the same arrays read by :func:`safe_unpickle`."""
        if self.check_integrity:
            return super()._open(train)
        tv = self.torchvision_class
        data, targets = [], []
        for name, _ in tv.train_list if train else tv.test_list:
            entry = safe_unpickle(os.path.join(self.root, tv.base_folder, name))
            data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            targets.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
        return SimpleNamespace(data=np.concatenate(data).transpose(0, 2, 3, 1), targets=targets)  # HWC, as torchvision

    def _expected_files(self) -> tuple[str, list[str]]:
        tv = self.torchvision_class
        files = [name for name, _ in tv.train_list + tv.test_list] + [tv.meta["filename"]]
        return os.path.join(self.root, tv.base_folder), files

    def _arrays(self, dataset: Any) -> tuple[Tensor, Tensor]:
        images = torch.from_numpy(np.asarray(dataset.data)).permute(0, 3, 1, 2)  # HWC -> CHW
        return images, torch.as_tensor(np.asarray(dataset.targets, dtype=np.int64))


class CIFAR100(CIFAR10):
    """CIFAR-100 (fine labels) from ``<root>/cifar-100-python/``; as :class:`CIFAR10` with ``num_classes=100``."""

    name = "CIFAR-100"
    torchvision_class = tvd.CIFAR100
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)

    default_num_classes = 100
