"""Federated datasets: one shared training set, partitioned into client index lists."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning_asyncfl._lazy import lazy_attributes

_NAMES = {
    "CIFAR10": "lightning_asyncfl.data.cifar",
    "CIFAR100": "lightning_asyncfl.data.cifar",
    "FederatedDataModule": "lightning_asyncfl.data.datamodule",
    "Digits": "lightning_asyncfl.data.digits",
    "FlowerPartition": "lightning_asyncfl.data.flwr",
    "Given": "lightning_asyncfl.data.given",
    "HuggingFace": "lightning_asyncfl.data.hf",
    "FEMNIST": "lightning_asyncfl.data.leaf",
    "LEAFDataModule": "lightning_asyncfl.data.leaf",
    "Shakespeare": "lightning_asyncfl.data.leaf",
    "EMNIST": "lightning_asyncfl.data.mnist",
    "MNIST": "lightning_asyncfl.data.mnist",
    "FashionMNIST": "lightning_asyncfl.data.mnist",
    "IID": "lightning_asyncfl.data.partition",
    "Dirichlet": "lightning_asyncfl.data.partition",
    "LabelsPerClient": "lightning_asyncfl.data.partition",
    "Natural": "lightning_asyncfl.data.partition",
    "Partition": "lightning_asyncfl.data.partition",
    "QuantitySkew": "lightning_asyncfl.data.partition",
    "Shards": "lightning_asyncfl.data.partition",
    "SVHN": "lightning_asyncfl.data.svhn",
    "Synthetic": "lightning_asyncfl.data.synthetic",
    "TensorFederatedData": "lightning_asyncfl.data.tensors",
    "TorchvisionDataModule": "lightning_asyncfl.data.vision",
    "random_crop_flip": "lightning_asyncfl.data.vision",
}

__all__ = [
    "FederatedDataModule", "TorchvisionDataModule", "TensorFederatedData", "Given", "Digits", "Synthetic", "LEAFDataModule", "FEMNIST", "Shakespeare", "HuggingFace",
    "MNIST", "FashionMNIST", "EMNIST", "CIFAR10", "CIFAR100", "SVHN", "random_crop_flip",
    "Partition", "FlowerPartition", "IID", "Dirichlet", "Shards", "Natural", "LabelsPerClient", "QuantitySkew",
]  # fmt: skip

__getattr__, __dir__ = lazy_attributes(__name__, _NAMES, globals())

if TYPE_CHECKING:
    from lightning_asyncfl.data.cifar import CIFAR10, CIFAR100
    from lightning_asyncfl.data.datamodule import FederatedDataModule
    from lightning_asyncfl.data.digits import Digits
    from lightning_asyncfl.data.flwr import FlowerPartition
    from lightning_asyncfl.data.given import Given
    from lightning_asyncfl.data.hf import HuggingFace
    from lightning_asyncfl.data.leaf import FEMNIST, LEAFDataModule, Shakespeare
    from lightning_asyncfl.data.mnist import EMNIST, MNIST, FashionMNIST
    from lightning_asyncfl.data.partition import IID, Dirichlet, LabelsPerClient, Natural, Partition, QuantitySkew, Shards
    from lightning_asyncfl.data.svhn import SVHN
    from lightning_asyncfl.data.synthetic import Synthetic
    from lightning_asyncfl.data.tensors import TensorFederatedData
    from lightning_asyncfl.data.vision import TorchvisionDataModule, random_crop_flip
