"""Built-in LightningModules. Any LightningModule with ``training_step``,
``validation_step`` and ``configure_optimizers`` works via ``model._target_``."""

from lightning_asyncfl.models.base import ClassifierModule
from lightning_asyncfl.models.char_lstm import CharLSTM
from lightning_asyncfl.models.cnn import CNN
from lightning_asyncfl.models.convnet import ConvNet
from lightning_asyncfl.models.lenet5 import LeNet5
from lightning_asyncfl.models.mlp import MLP
from lightning_asyncfl.models.resnet import ResNet18
from lightning_asyncfl.models.transformer import Transformer

__all__ = ["CNN", "CharLSTM", "ClassifierModule", "ConvNet", "LeNet5", "MLP", "ResNet18", "Transformer"]
