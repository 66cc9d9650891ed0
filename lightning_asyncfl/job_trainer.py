"""What a LightningModule sees as ``self.trainer`` during one client job, and what it may not use.

A client job is one ``lightning.Trainer(max_epochs=client.epochs).fit`` of the module on one
client's data, without building a ``Trainer`` (its set-up would dominate small jobs). The
module is attached to a :class:`JobTrainer`: a small object with the attributes of
``lightning.Trainer`` that keep a meaning inside one job (``current_epoch``,
``global_step``, ``optimizers``, ``lr_scheduler_configs``, ``callback_metrics``,
``estimated_stepping_batches``, ...) and Lightning's own result collection behind
``self.log``, so ``on_step``/``on_epoch``/``reduce_fx`` and ``torchmetrics`` objects
behave exactly as in Lightning. Any other ``self.trainer`` attribute raises
:class:`UnsupportedFeature`, which names the module, the attribute and what to do.

:func:`module_problems` lists, before any training, what a module overrides that has no
per-job meaning (its own dataloaders, callbacks, ``setup``, checkpoint hooks, ...).

Why this file is a little longer than the others (about 365 lines): it is one thing, the
stand-in for ``lightning.Trainer`` inside a job, and the list of what the stand-in lacks
(:data:`UNSUPPORTED_HOOKS`, checked by :func:`module_problems`) stays beside it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultCollection
from lightning.pytorch.utilities.types import LRSchedulerConfig
from torch import Tensor

from lightning_asyncfl.client_algorithms.base import ClientAlgorithm

GRADIENT_CLIP_ALGORITHMS = ["norm", "value"]

#: overridable LightningModule methods a client job cannot honour, and what to do instead
UNSUPPORTED_HOOKS: dict[str, str] = {
    "train_dataloader": "a client's data comes from the data config (data=..., partition=...); remove train_dataloader",
    "val_dataloader": "the global model is evaluated on the data config's test set; remove val_dataloader",
    "test_dataloader": "the global model is evaluated on the data config's test set; remove test_dataloader",
    "predict_dataloader": "there is no predict stage in a federated run; remove predict_dataloader",
    "configure_callbacks": "Trainer callbacks do not run in client jobs; use the run's callbacks (callbacks.NAME._target_)",
    "setup": "the module is built once and its weights are bound to the global model; build layers in __init__",
    "configure_model": "the module is built once and its weights are bound to the global model; build layers in __init__",
    "configure_sharded_model": "the module is built once and its weights are bound to the global model; build layers in __init__",
    "teardown": "client jobs have no teardown stage; release resources in on_train_end",
    "on_save_checkpoint": "run checkpoints hold the global model's tensors only; keep state in parameters or buffers",
    "on_load_checkpoint": "run checkpoints hold the global model's tensors only; keep state in parameters or buffers",
    "transfer_batch_to_device": "batches of the data config are already on the training device; transform them in training_step",
    "on_before_batch_transfer": "batches of the data config are already on the training device; transform them in training_step",
    "on_after_batch_transfer": "batches of the data config are already on the training device; transform them in training_step",
    "on_validation_model_zero_grad": "evaluation of the global model is not part of a client job; remove it",
}


class UnsupportedFeature(AttributeError):
    """A LightningModule uses a Lightning feature that has no meaning in a client job."""


def _is_overridden(module: L.LightningModule, name: str) -> bool:
    method = getattr(type(module), name, None)
    base = getattr(L.LightningModule, name, None)
    return method is not None and base is not None and method is not base


def module_problems(module: L.LightningModule, *, accumulate_grad_batches: int = 1, gradient_clip_val: float | None = None, algorithm: Any = None) -> list[str]:
    """What ``module`` asks of Lightning that a client job cannot give, one sentence each
    (the module, the feature, what to do); empty when it can train."""
    name = type(module).__name__
    problems = [f"{name} overrides {hook}: {advice}" for hook, advice in UNSUPPORTED_HOOKS.items() if _is_overridden(module, hook)]
    if not _is_overridden(module, "training_step"):
        problems.append(f"{name} has no training_step; a client job runs training_step on every batch")
    step = inspect.signature(module.training_step).parameters
    if "dataloader_iter" in step:
        problems.append(f"{name}.training_step takes dataloader_iter; client jobs hand batches to training_step(batch, batch_idx)")
    if "optimizer_idx" in step:
        problems.append(
            f"{name}.training_step takes optimizer_idx: training with several optimizers needs manual optimization "
            "(self.automatic_optimization = False and opt1, opt2 = self.optimizers()), as in Lightning 2"
        )
    if not module.automatic_optimization:
        if gradient_clip_val is not None:
            problems.append(
                f"client.gradient_clip_val is set but {name} uses manual optimization: call "
                "self.clip_gradients(opt, gradient_clip_val=..., gradient_clip_algorithm=...) in training_step (as Lightning requires)"
            )
        if accumulate_grad_batches != 1:
            problems.append(
                f"client.accumulate_grad_batches is {accumulate_grad_batches} but {name} uses manual optimization: "
                "accumulate in training_step by stepping every N batches (as Lightning requires)"
            )
        if algorithm is not None and type(algorithm) is not ClientAlgorithm:
            problems.append(
                f"client_algorithm {type(algorithm).__name__} changes each automatic optimization step, but {name} uses "
                "manual optimization; use client_algorithm=none and add the method's terms in training_step"
            )
    return problems


class _Strategy:
    """The parts of Lightning's single-device strategy a module and its optimizers use."""

    def __init__(self, job: JobTrainer) -> None:
        self._job = job
        self._lightning_optimizers: list[LightningOptimizer] = []
        self.handles_gradient_accumulation = False

    @property
    def lightning_module(self) -> L.LightningModule:
        return self._job.lightning_module

    @property
    def root_device(self) -> torch.device:
        return self._job.device

    def reduce(self, value: Any, *args: Any, **kwargs: Any) -> Any:
        return value

    def backward(self, loss: Tensor, optimizer: Any, *args: Any, **kwargs: Any) -> None:
        self._job.backward(loss, *args, **kwargs)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Any, model: Any = None, **kwargs: Any) -> Any:
        return self._job.optimizer_step(optimizer, closure, **kwargs)


class _AcceleratorConnector:
    is_distributed = False


class _LoggerConnector:
    """The bookkeeping of Lightning's logger connector that ``self.log`` relies on, for one job."""

    def __init__(self) -> None:
        self._current_fx: str | None = None
        self._first_loop_iter: bool | None = None

    def should_reset_tensors(self, fx: str) -> bool:
        return self._current_fx != fx and self._first_loop_iter in (None, True)

    def on_batch_start(self, results: _ResultCollection, batch: Any) -> None:
        if self._first_loop_iter is None:
            self._first_loop_iter = True
        elif self._first_loop_iter is True:
            self._first_loop_iter = False
        results.batch = batch
        results.batch_size = None
        results.dataloader_idx = None

    def reset(self) -> None:
        self._first_loop_iter = None
        self._current_fx = None


class _JobResults(_ResultCollection):
    """Lightning's result collection, with a fast path for the common ``self.log`` call.

    Lightning moves a logged tensor's accumulator to the value's device and rebuilds and
    compares its metadata at every call (a few hundred microseconds, more than a small
    model's step). When a tensor is logged again under the same name with the same
    arguments, on the device it was logged on before, both are no-ops; this collection
    then updates the accumulator directly, as Lightning's own ``update_metrics`` does.
    """

    def __init__(self, training: bool) -> None:
        super().__init__(training)
        self._arguments: dict[str, tuple[Any, ...]] = {}

    def log(self, fx: str, name: str, value: Any, **kwargs: Any) -> None:  # type: ignore[override]
        key = f"{fx}.{name}"
        metric = self.get(key)
        arguments = tuple((k, v) for k, v in kwargs.items() if k != "batch_size")
        if (
            metric is not None and self.dataloader_idx is None and isinstance(value, Tensor) and metric.is_tensor
            and self._arguments.get(key) == arguments and metric.value.device == value.device
        ):  # fmt: skip
            if not kwargs.get("enable_graph", False):
                value = value.detach()
            self.update_metrics(key, value, self._extract_batch_size(metric, kwargs.get("batch_size"), metric.meta))
            return
        super().log(fx, name, value, **kwargs)
        self._arguments[key] = arguments


class JobTrainer:
    """``self.trainer`` of a LightningModule inside a client job (one fit of ``epochs`` epochs).

    Only what keeps a meaning within one job is here; anything else raises
    :class:`UnsupportedFeature` naming the module and the attribute.

    Args:
        module: the LightningModule it is attached to.
        device: the training device.
        epochs: ``max_epochs`` of one job (``client.epochs``).
        accumulate_grad_batches: ``client.accumulate_grad_batches``.
        gradient_clip_val: ``client.gradient_clip_val`` (None: no clipping).
        gradient_clip_algorithm: ``client.gradient_clip_algorithm`` (``norm`` or ``value``).
    """

    barebones = False
    sanity_checking = False
    fast_dev_run = False
    is_global_zero = True
    global_rank = local_rank = node_rank = 0
    world_size = num_nodes = num_devices = 1
    logger = None
    loggers: list[Any] = []
    log_every_n_steps = 1
    check_val_every_n_epoch = None
    min_epochs = None
    max_steps = -1
    val_check_interval = None

    def __init__(
        self,
        module: L.LightningModule,
        device: torch.device,
        *,
        epochs: int = 1,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        fabric_precision: Any = None,
    ) -> None:
        from lightning.pytorch.utilities import GradClipAlgorithmType

        self.lightning_module = module
        self.device = device
        self.max_epochs = epochs
        self.accumulate_grad_batches = accumulate_grad_batches
        self.gradient_clip_val = gradient_clip_val
        self.gradient_clip_algorithm = GradClipAlgorithmType(gradient_clip_algorithm) if gradient_clip_val is not None else None
        self.precision_plugin = Precision()  # Lightning's own clipping arithmetic
        self.fabric_precision = fabric_precision  # autocast and loss scaling of the client precision
        self.strategy = _Strategy(self)
        self.profiler = PassThroughProfiler()
        self._accelerator_connector = _AcceleratorConnector()
        self._logger_connector = _LoggerConnector()
        self._results: _ResultCollection | None = None
        self._train_results = _JobResults(training=True)  # one per trainer, reset per job (as a fit starts)
        self._eval_results = _JobResults(training=False)
        self.training = self.validating = False
        self.state = None
        self.optimizers: list[torch.optim.Optimizer] = []
        self.lr_scheduler_configs: list[LRSchedulerConfig] = []
        self.current_epoch = 0
        self.global_step = 0
        self.num_training_batches = 0
        self.num_val_batches: list[int] = []
        self.callback_metrics: dict[str, Tensor] = {}
        self.logged_metrics: dict[str, Tensor] = {}
        self.progress_bar_metrics: dict[str, float] = {}
        self.automatic = True

    def __getattr__(self, name: str) -> Any:  # only for attributes not set above
        module = type(self.__dict__.get("lightning_module")).__name__
        raise UnsupportedFeature(
            f"{module} uses self.trainer.{name}, which a client job does not have: a client job is one fit of "
            f"client.epochs epochs on one client's data, without a lightning.Trainer. Read it from your module's own "
            f"attributes or the run's config instead (see docs/models.md for what self.trainer offers)"
        )

    # -- the job ---------------------------------------------------------------------
    @property
    def estimated_stepping_batches(self) -> int:
        """Optimizer steps of this job, as Lightning counts them (for OneCycleLR and friends)."""
        return math.ceil(self.num_training_batches / self.accumulate_grad_batches) * max(self.max_epochs, 1)

    def start(self, num_batches: int) -> None:
        """A new job of ``num_batches`` batches per epoch: counters, metrics and results reset."""
        self.num_training_batches = num_batches
        self.current_epoch = 0
        self.global_step = 0
        self.callback_metrics, self.logged_metrics, self.progress_bar_metrics = {}, {}, {}
        self._results = self._train_results
        self._results.reset()
        self._logger_connector.reset()

    def start_evaluation(self) -> None:
        """A new evaluation: metrics and results reset."""
        self.start(0)
        self._results = self._eval_results
        self._results.reset()

    # -- backward and optimizer step (Lightning's strategy and precision plugin) ------
    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        """``on_before_backward``, the module's ``backward`` (loss scaled for 16-bit), ``on_after_backward``."""
        module = self.lightning_module
        call_hook(module, "on_before_backward", loss)
        scaler = getattr(self.fabric_precision, "scaler", None)
        scaled = scaler.scale(loss) if scaler is not None else loss
        call_hook(module, "backward", scaled, *args, **kwargs)
        call_hook(module, "on_after_backward")

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Any, **kwargs: Any) -> Any:
        """Lightning's precision plugin step: closure, ``on_before_optimizer_step``, clipping, step."""
        module = self.lightning_module
        scaler = getattr(self.fabric_precision, "scaler", None)

        def after_closure() -> None:
            call_hook(module, "on_before_optimizer_step", optimizer)
            if self.automatic:
                call_hook(module, "configure_gradient_clipping", optimizer, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm=self.gradient_clip_algorithm)

        if scaler is None:

            def wrapped() -> Any:
                result = closure()
                after_closure()
                return result

            return optimizer.step(closure=wrapped, **kwargs)
        result = closure()  # 16-bit: unscale before clipping, skip the step on inf/nan
        scaler.unscale_(optimizer)
        after_closure()
        if result is None and self.automatic:
            return None
        output = scaler.step(optimizer, **kwargs)
        scaler.update()
        return output

    def wrap_optimizers(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers
        self.strategy._lightning_optimizers = [LightningOptimizer._to_lightning_optimizer(o, self.strategy) for o in optimizers]  # type: ignore[arg-type]

    # -- metrics -----------------------------------------------------------------------
    def batch_metrics(self) -> dict[str, Tensor]:
        """After a batch: the step values logged (for loggers), as Lightning's ``metrics(on_step=True)``."""
        assert self._results is not None
        metrics = self._results.metrics(on_step=True)
        self.progress_bar_metrics.update(metrics["pbar"])
        self.callback_metrics.update(metrics["callback"])
        return metrics["log"]

    def epoch_metrics(self) -> dict[str, Tensor]:
        """At an epoch's end: the epoch values (reduced, or ``Metric.compute()``), as Lightning's ``metrics(on_step=False)``."""
        assert self._results is not None
        metrics = self._results.metrics(on_step=False)
        self.progress_bar_metrics.update(metrics["pbar"])
        self.callback_metrics.update(metrics["callback"])
        self.logged_metrics.update(metrics["log"])
        self._logger_connector._current_fx = None
        return metrics["log"]


def call_hook(module: L.LightningModule, name: str, *args: Any, **kwargs: Any) -> Any:
    """``module.NAME(*args, **kwargs)`` with ``_current_fx_name`` set, as Lightning calls hooks (``self.log`` needs it)."""
    previous = module._current_fx_name
    _set(module, "_current_fx_name", name)  # a plain attribute: nn.Module.__setattr__'s checks cost more than most hooks
    try:
        return getattr(module, name)(*args, **kwargs)
    finally:
        _set(module, "_current_fx_name", previous)


_set = object.__setattr__


def scalar_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """``{name: float}`` of logged tensors."""
    return {k: float(v) for k, v in values.items()}
