"""Federated datasets: one shared training set, partitioned into client index lists."""

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

__all__ = [
    "FederatedDataModule", "TorchvisionDataModule", "TensorFederatedData", "Given", "Digits", "Synthetic", "LEAFDataModule", "FEMNIST", "Shakespeare", "HuggingFace",
    "MNIST", "FashionMNIST", "EMNIST", "CIFAR10", "CIFAR100", "SVHN", "random_crop_flip",
    "Partition", "FlowerPartition", "IID", "Dirichlet", "Shards", "Natural", "LabelsPerClient", "QuantitySkew",
]  # fmt: skip
