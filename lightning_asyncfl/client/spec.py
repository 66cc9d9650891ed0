"""TrainerSpec: a picklable recipe that executors send to their workers to build a ClientTrainer."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from torch import Tensor

from lightning_asyncfl.client.trainer import ClientTrainer
from lightning_asyncfl.client_algorithms.base import ClientAlgorithm
from lightning_asyncfl.data.packed import PackedIndices
from lightning_asyncfl.faults import Faults


@dataclass
class TrainerSpec:
    """Everything needed to build a :class:`ClientTrainer`, picklable: executors send it to
    worker processes and Ray actors once, and each builds its own trainer from it.

    Calling the spec builds a trainer on its own copy of the module and of the client
    algorithm (workers never share a module or an algorithm's per-job values).

    Attributes:
        module: the LightningModule template (copied, never trained itself).
        train_dataset: the shared training set.
        client_indices: each client's index list into ``train_dataset``.
        settings: the ``client`` config keys (``epochs``, ``batch_size``, ``accelerator``, ``precision``).
        algorithm: the client algorithm template (copied per trainer), or None.
        augment: the data module's train-time augmentation, or None.
        faults: injected client faults, or None.
    """

    module: L.LightningModule
    train_dataset: Any
    client_indices: Sequence[Tensor]
    settings: dict[str, Any] = field(default_factory=dict)
    algorithm: ClientAlgorithm | None = None
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None
    faults: Faults | None = None

    def __post_init__(self) -> None:
        self.client_indices = PackedIndices.of(self.client_indices)  # two tensors to send, not one per client

    def __call__(self, device: str | None = None) -> ClientTrainer:
        return ClientTrainer(
            copy.deepcopy(self.module), self.train_dataset, self.client_indices,
            algorithm=copy.deepcopy(self.algorithm), augment=self.augment, device=device, faults=self.faults,
            **self.settings,
        )  # fmt: skip
