"""Per-client evaluation: the global model on every client's own test data, in one pass.

FL papers report how the global model does on each client's local data (fairness,
personalization): the mean over clients, the sample-weighted mean, the spread, the worst
and best 10% of clients and the share of clients above an accuracy threshold (Li, Sanjabi,
Beirami, Smith, "Fair Resource Allocation in Federated Learning", ICLR 2020,
https://arxiv.org/abs/1905.10497, Table 2 reports "average", "worst 10%", "best 10%" and
the variance of the per-device accuracies).

:class:`ClientEvaluator` runs the model once over the concatenation of every client's test
samples, in batches of ``eval.batch_size`` (not one loader per client), keeps each
sample's cross-entropy and correctness, and sums them per client with ``bincount``.
Per-sample values need the model's ``forward`` to return class logits of shape
``[batch, classes]`` (the built-in models do). :func:`client_statistics` turns the
per-client vectors into the summary columns of ``metrics.csv``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_asyncfl.client.batches import _batches, _DeviceTensors, _on_device
from lightning_asyncfl.client.worker import _FabricWorker
from lightning_asyncfl.data.packed import PackedIndices
from lightning_asyncfl.state import ModelState

#: prefixes of the per-client summary columns of ``metrics.csv``
CLIENT_COLUMNS = ("clients_evaluated", "client_accuracy_", "client_loss_")
#: the share of clients in "worst 10%" and "best 10%"
TAIL = 0.1


def client_statistics(per_client: Mapping[str, np.ndarray], threshold: float = 0.5) -> dict[str, float]:
    """The summary columns of per-client metrics (clients without test samples left out).

    Args:
        per_client: ``num_samples``, ``accuracy`` and ``loss``, one entry per client
            (see :meth:`ClientEvaluator.per_client`).
        threshold: the accuracy a client must reach to count in ``client_accuracy_above``.

    Returns:
        For accuracy and loss: ``client_{m}_mean`` (mean over clients), ``_weighted_mean``
        (weighted by each client's test samples, i.e. the pooled value), ``_std``
        (population standard deviation over clients), ``_worst10`` and ``_best10`` (mean
        over the ``ceil(0.1 * n)`` worst and best clients: lowest accuracy, highest loss
        for worst); ``client_accuracy_above`` (share of clients with accuracy >=
        ``threshold``) and ``clients_evaluated`` (clients with at least one test sample).
    """
    counts = np.asarray(per_client["num_samples"], dtype=np.float64)
    valid = counts > 0
    out: dict[str, float] = {"clients_evaluated": int(valid.sum())}
    if not valid.any():
        return out
    weights = counts[valid]
    tail = max(1, math.ceil(TAIL * int(valid.sum())))
    for metric, higher_is_better in (("accuracy", True), ("loss", False)):
        values = np.asarray(per_client[metric], dtype=np.float64)[valid]
        ordered = np.sort(values)  # ascending
        low, high = float(ordered[:tail].mean()), float(ordered[-tail:].mean())
        out[f"client_{metric}_mean"] = float(values.mean())
        out[f"client_{metric}_weighted_mean"] = float((values * weights).sum() / weights.sum())
        out[f"client_{metric}_std"] = float(values.std())
        out[f"client_{metric}_worst10"] = low if higher_is_better else high
        out[f"client_{metric}_best10"] = high if higher_is_better else low
    accuracy = np.asarray(per_client["accuracy"], dtype=np.float64)[valid]
    out["client_accuracy_above"] = float((accuracy >= threshold).mean())
    return out


class ClientEvaluator(_FabricWorker):
    """The global model on each client's local test data; called by the loop every ``eval.clients_every`` versions.

    Args:
        module: a LightningModule whose ``forward`` returns class logits (its own copy).
        source: the dataset the client test indices point into.
        indices: one int64 index tensor per client into ``source``.
        batch_size: samples per forward pass (across clients).
        accelerator: Fabric accelerator.
        precision: Fabric precision.
        threshold: the accuracy of ``client_accuracy_above``.

    Attributes:
        last: ``(version, per_client)`` of the latest call, or None.
    """

    def __init__(
        self,
        module: L.LightningModule,
        source: Any,
        indices: Sequence[Tensor],
        *,
        batch_size: int = 1024,
        accelerator: str = "cpu",
        precision: str = "32-true",
        threshold: float = 0.5,
    ) -> None:
        super().__init__(module, accelerator=accelerator, precision=precision)
        packed = PackedIndices.of(indices)
        self.num_clients = len(packed)
        sizes = torch.diff(packed.offsets)
        self.counts = sizes.numpy().astype(np.int64)
        self.dataset = _on_device(source, self.device)
        on_device = isinstance(self.dataset, _DeviceTensors)
        self.samples = packed.flat.to(self.device) if on_device else packed.flat
        self.owner = torch.repeat_interleave(torch.arange(self.num_clients), sizes).to(self.device)
        self.batch_size, self.threshold = batch_size, float(threshold)
        self.last: tuple[int, dict[str, np.ndarray]] | None = None

    def per_client(self, state: ModelState) -> dict[str, np.ndarray]:
        """``num_samples``, mean ``loss`` and ``accuracy`` of ``state`` on each client's test data (NaN for a client without any)."""
        self.load(state)
        self.module.eval()
        k = self.num_clients
        loss_sum = torch.zeros(k, dtype=torch.float64, device=self.device)
        correct = torch.zeros(k, dtype=torch.float64, device=self.device)
        start = 0
        with torch.inference_mode():
            for x, y, *_ in _batches(self.dataset, self.samples, self.batch_size, None, self.device):
                x, y = self.fabric.to_device(x), self.fabric.to_device(y)
                with self.fabric.autocast():
                    logits = self.module(x)
                if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != len(y):
                    shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
                    raise TypeError(f"per-client evaluation needs {type(self.module).__name__}.forward to return class logits [batch, classes], got {shape}")
                owner = self.owner[start : start + len(y)]
                start += len(y)
                loss = F.cross_entropy(logits.float(), y, reduction="none")
                loss_sum += torch.bincount(owner, weights=loss.double(), minlength=k)
                correct += torch.bincount(owner, weights=(logits.argmax(dim=1) == y).double(), minlength=k)
        counts = self.counts.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                "num_samples": self.counts.copy(),
                "loss": loss_sum.cpu().numpy() / counts,
                "accuracy": correct.cpu().numpy() / counts,
            }

    def __call__(self, state: ModelState, version: int) -> dict[str, float]:
        """The summary columns (see :func:`client_statistics`) of ``state`` at ``version``; the full vectors in :attr:`last`."""
        per_client = self.per_client(state)
        self.last = (int(version), per_client)
        return client_statistics(per_client, self.threshold)
