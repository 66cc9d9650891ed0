"""The model's cost per training example, counted rather than guessed.

:func:`training_flops_per_example` runs one forward and backward pass of the module's own
``training_step`` on one batch under :class:`torch.utils.flop_counter.FlopCounterMode`
and divides by the batch size. The counter counts the matrix products and convolutions
(what dominates a network's cost), not element-wise operations; the count depends only on
shapes, so it is deterministic. It runs with oneDNN off, so that a recurrent layer, which
oneDNN would run as one fused kernel the counter does not see, runs as its matrix
products.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["training_flops_per_example"]


def _loss(output: Any) -> torch.Tensor:
    if isinstance(output, dict):
        output = output.get("loss")
    if not isinstance(output, torch.Tensor):
        raise TypeError("training_step must return the loss (a tensor, or a dict with 'loss') to count its FLOPs")
    return output


def training_flops_per_example(module: torch.nn.Module, dataset: Dataset, batch_size: int) -> float:
    """FLOPs of one forward and backward pass of ``module.training_step``, per example.

    Args:
        module: the LightningModule (a copy is run, the module itself is untouched).
        dataset: training data; its first ``batch_size`` examples are the batch.
        batch_size: the clients' batch size.

    Returns:
        The counted FLOPs divided by the batch's size (> 0 unless the model does no
        matrix products or convolutions).
    """
    n = min(int(batch_size), len(dataset))
    batch = next(iter(DataLoader(Subset(dataset, range(n)), batch_size=n, shuffle=False)))
    model = copy.deepcopy(module).cpu().train()
    counter = FlopCounterMode(display=False)
    try:
        # without oneDNN, CPU recurrent layers (nn.LSTM) run as the matrix products the counter counts
        with warnings.catch_warnings(), torch.backends.mkldnn.flags(enabled=False), counter:
            warnings.simplefilter("ignore")  # self.log outside a trainer warns; nothing is logged here
            if getattr(model, "automatic_optimization", True):
                _loss(model.training_step(batch, 0)).backward()
            else:  # manual optimization: backward runs inside training_step, which needs self.optimizers()
                from lightning_asyncfl.client import ClientTrainer
                from lightning_asyncfl.state import Job, ModelState

                trainer = ClientTrainer(model, dataset, [torch.arange(n)], epochs=1, batch_size=n)
                trainer.train(Job(-1, 0, 0, 0, 0.0, 0.0), ModelState.from_module(model), limit_batches=1)
    except Exception as error:
        raise ValueError(
            f"the training FLOPs of {type(module).__name__} could not be counted from one training_step outside a "
            f"trainer ({type(error).__name__}: {error}); set system.flops_per_example to the model's FLOPs per "
            "example (forward + backward)"
        ) from None
    return counter.get_total_flops() / n
