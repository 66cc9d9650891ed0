"""Evaluator: a global model's test (and validation) metrics through the module's ``validation_step``."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from lightning_asyncfl.client.batches import _batches, _DeviceTensors, _on_device
from lightning_asyncfl.client.worker import _FabricWorker, _has_torchmetrics, _reset_torchmetrics
from lightning_asyncfl.job_trainer import JobTrainer, call_hook
from lightning_asyncfl.state import ModelState


class Evaluator(_FabricWorker):
    """Evaluates a global model with the module's ``validation_step`` on the test set (and the validation split).

    Runs Lightning's validation epoch (``on_validation_start``, ``on_validation_epoch_start``,
    the batch hooks around ``validation_step``, ``on_validation_epoch_end``,
    ``on_validation_end``) and returns what ``self.log`` sent, reduced over the epoch as
    Lightning does (a sample-weighted mean by default, a ``Metric`` object's ``compute()``),
    prefixed with ``test_`` (the built-in models log ``loss`` and ``accuracy``), then the
    same on ``val_dataset`` prefixed with ``val_`` when there is one. Every
    ``torchmetrics`` metric of the module is reset before and after, so no state crosses
    evaluations or client jobs.
    """

    def __init__(
        self,
        module: L.LightningModule,
        test_dataset: Any,
        *,
        batch_size: int = 1024,
        accelerator: str = "cpu",
        precision: str = "32-true",
        val_dataset: Any = None,
    ) -> None:
        super().__init__(module, accelerator=accelerator, precision=precision)
        self.splits = []  # (prefix, the dataset, on the device when it is in memory, its indices)
        for prefix, dataset in [("test_", test_dataset)] + ([("val_", val_dataset)] if val_dataset is not None else []):
            placed = _on_device(dataset, self.device)
            self.splits.append((prefix, placed, torch.arange(len(dataset), device=self.device if isinstance(placed, _DeviceTensors) else None)))
        self.dataset, self.indices = self.splits[0][1], self.splits[0][2]
        self.batch_size = batch_size
        self.view = JobTrainer(module, self.device)
        module.trainer = self.view  # type: ignore[assignment]
        self._metrics = _has_torchmetrics(module)

    def evaluate(self, state: ModelState, *, limit_batches: int | None = None) -> dict[str, float]:
        """Test (and validation) metrics of ``state`` (on at most ``limit_batches`` batches of each if given)."""
        self.load(state)
        out: dict[str, float] = {}
        for prefix, dataset, indices in self.splits:
            out.update({f"{prefix}{key}": value for key, value in self._epoch(dataset, indices, limit_batches).items()})
        return out

    def _epoch(self, dataset: Any, indices: Tensor, limit_batches: int | None) -> dict[str, float]:
        """One validation epoch over ``dataset`` with Lightning's hooks; what ``self.log`` sent, reduced."""
        module, view = self.module, self.view
        module.eval()
        if self._metrics:
            _reset_torchmetrics(module)
        view.start_evaluation()
        view.validating = True
        try:
            with torch.inference_mode():
                call_hook(module, "on_validation_start")
                call_hook(module, "on_validation_epoch_start")
                for i, batch in enumerate(_batches(dataset, indices, self.batch_size, None, self.device)):
                    if limit_batches is not None and i >= limit_batches:
                        break
                    batch = self.fabric.to_device(batch)
                    view._logger_connector.on_batch_start(view._results, batch)
                    call_hook(module, "on_validation_batch_start", batch, i)
                    with self.fabric.autocast():
                        output = call_hook(module, "validation_step", batch, i)
                    call_hook(module, "on_validation_batch_end", output, batch, i)
                    view.batch_metrics()
                view._logger_connector._first_loop_iter = None
                call_hook(module, "on_validation_epoch_end")
                logged = view.epoch_metrics()
                call_hook(module, "on_validation_end")
        finally:
            view.validating = False
            if self._metrics:
                _reset_torchmetrics(module)
        return {key: float(value) for key, value in logged.items()}
