"""ClassifierModule: the shared training, evaluation and optimizer hooks of the built-in models."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.classification import multiclass_accuracy

from lightning_asyncfl.errors import require, require_choice

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}


class ClassifierModule(L.LightningModule):
    """A LightningModule for classification whose network a subclass builds in ``self.net``.

    ``training_step`` logs ``loss``; ``validation_step`` logs ``loss`` and ``accuracy``
    (torchmetrics), which the evaluator reports as ``test_loss`` and ``test_accuracy``.

    Args:
        input_shape: shape of one sample (from the data config).
        num_classes: number of classes (from the data config).
        optimizer: ``sgd`` or ``adam``, created fresh for every client job.
        lr: local learning rate.
        momentum: SGD momentum.
        weight_decay: L2 weight decay.
    """

    def __init__(
        self,
        *,
        input_shape: Sequence[int],
        num_classes: int,
        optimizer: str = "sgd",
        lr: float = 0.05,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        require(len(input_shape) >= 1 and all(int(d) >= 1 for d in input_shape), "input_shape", list(input_shape), "a list of positive sizes")
        require(num_classes >= 2, "num_classes", num_classes, ">= 2")
        require_choice("optimizer", optimizer, OPTIMIZERS)
        require(lr > 0, "lr", lr, "> 0")
        require(momentum >= 0, "momentum", momentum, ">= 0")
        require(weight_decay >= 0, "weight_decay", weight_decay, ">= 0")
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = int(num_classes)
        self.optimizer_name, self.lr, self.momentum, self.weight_decay = optimizer, lr, momentum, weight_decay

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("loss", loss)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("loss", F.cross_entropy(logits, y))
        self.log("accuracy", multiclass_accuracy(logits, y, num_classes=self.num_classes, average="micro"))

    def plain_sgd(self) -> dict[str, float] | None:
        """SGD's ``lr``, ``momentum`` and ``weight_decay`` when one training step of this module
        is exactly cross-entropy of :meth:`forward` then ``torch.optim.SGD`` (what
        :class:`~lightning_asyncfl.executors.BatchedExecutor` runs for many clients at once);
        None when it is not (another optimizer, an overridden ``training_step`` or
        ``configure_optimizers``)."""
        cls = type(self)
        if cls.training_step is not ClassifierModule.training_step or cls.configure_optimizers is not ClassifierModule.configure_optimizers:
            return None
        if self.optimizer_name != "sgd":
            return None
        return {"lr": float(self.lr), "momentum": float(self.momentum), "weight_decay": float(self.weight_decay)}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def flat_size(shape: Sequence[int]) -> int:
    """Number of features of one flattened sample."""
    return int(torch.Size(shape).numel())
