"""Built-in LightningModules. Any LightningModule with ``training_step``,
``validation_step`` and ``configure_optimizers`` works via ``model._target_``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning_asyncfl._lazy import lazy_attributes

_NAMES = {
    "ClassifierModule": "lightning_asyncfl.models.base",
    "CharLSTM": "lightning_asyncfl.models.char_lstm",
    "CNN": "lightning_asyncfl.models.cnn",
    "ConvNet": "lightning_asyncfl.models.convnet",
    "LeNet5": "lightning_asyncfl.models.lenet5",
    "MLP": "lightning_asyncfl.models.mlp",
    "ResNet18": "lightning_asyncfl.models.resnet",
    "Transformer": "lightning_asyncfl.models.transformer",
}

__all__ = ["CNN", "CharLSTM", "ClassifierModule", "ConvNet", "LeNet5", "MLP", "ResNet18", "Transformer"]

__getattr__, __dir__ = lazy_attributes(__name__, _NAMES, globals())

if TYPE_CHECKING:
    from lightning_asyncfl.models.base import ClassifierModule
    from lightning_asyncfl.models.char_lstm import CharLSTM
    from lightning_asyncfl.models.cnn import CNN
    from lightning_asyncfl.models.convnet import ConvNet
    from lightning_asyncfl.models.lenet5 import LeNet5
    from lightning_asyncfl.models.mlp import MLP
    from lightning_asyncfl.models.resnet import ResNet18
    from lightning_asyncfl.models.transformer import Transformer
