"""How a client job and an evaluation read their data: batches of index lists.

An in-memory ``TensorDataset`` is held on the training device (:class:`_DeviceTensors`)
and batched by index gathers, without a DataLoader per job; any other dataset goes through
a ``DataLoader`` over a ``Subset``. :class:`_EpochOrders` replays a job's sample order as a
``Sampler`` (what :meth:`~lightning_asyncfl.client.ClientTrainer.job_dataloader` hands to
``lightning.Trainer``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler, Subset, TensorDataset


def _batches(dataset: Any, indices: Tensor, batch_size: int, generator: torch.Generator | None, device: torch.device) -> Iterator[Any]:
    """Batches of ``dataset[indices]``: shuffled by ``generator`` (training) or in order (None)."""
    order = indices if generator is None else indices[torch.randperm(len(indices), generator=generator)]
    if isinstance(dataset, _DeviceTensors):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield tuple(t[idx] for t in dataset.tensors)
        return
    loader = DataLoader(Subset(dataset, order.tolist()), batch_size=batch_size, shuffle=False)
    for batch in loader:
        yield batch


class _DeviceTensors:
    """An in-memory TensorDataset held on the training device: batches are index gathers."""

    def __init__(self, dataset: TensorDataset, device: torch.device) -> None:
        self.tensors = tuple(t.to(device) for t in dataset.tensors)

    def __len__(self) -> int:
        return len(self.tensors[0])


def _on_device(dataset: Any, device: torch.device) -> Any:
    return _DeviceTensors(dataset, device) if isinstance(dataset, TensorDataset) else dataset


class _EpochOrders(Sampler[int]):
    """The sample order of each epoch of a job: a fresh permutation of the client's indices per
    epoch, drawn from the job's generator (what :class:`ClientTrainer` trains on)."""

    def __init__(self, indices: Tensor, seed: int) -> None:
        self.indices = indices.cpu()
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices[torch.randperm(len(self.indices), generator=self.generator)].tolist())
