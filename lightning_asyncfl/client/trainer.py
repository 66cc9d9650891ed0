"""ClientTrainer: one client job at a time on a reused module, as ``lightning.Trainer.fit`` would run it.

Each job gets a fresh optimizer from ``configure_optimizers()`` (or, with
``client.keep_optimizer_state``, the client's own from its previous job) and its own
random stream (batch order, dropout) from the job's seed. ``self.log`` inside the module
reaches Fabric's loggers; the logged values of a job become the update's metrics (mean
over the job's steps).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.core.optimizer import _configure_optimizers, _configure_schedulers_automatic_opt, _configure_schedulers_manual_opt, _MockOptimizer, _validate_multiple_optimizers_support, _validate_optimizers_attached, _validate_scheduler_api
from lightning.pytorch.loops.optimization.automatic import ClosureResult
from lightning.pytorch.loops.optimization.manual import ManualResult
from lightning.pytorch.utilities.signature_utils import is_param_in_hook_signature
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lightning_asyncfl.client.batches import _batches, _DeviceTensors, _EpochOrders, _on_device
from lightning_asyncfl.client.settings import check_client_settings
from lightning_asyncfl.client.worker import _FabricWorker, _has_torchmetrics, _reset_torchmetrics, _seed_device
from lightning_asyncfl.client_algorithms.base import ClientAlgorithm, LocalTraining
from lightning_asyncfl.data.packed import PackedIndices
from lightning_asyncfl.faults import Faults
from lightning_asyncfl.job_trainer import JobTrainer, call_hook
from lightning_asyncfl.state import Job, JobResult, ModelState


#: the client-state key under which a client's optimizer and scheduler state travel (client.keep_optimizer_state)
OPTIMIZER_STATE_KEY = "lightning_asyncfl.optimizer_state"


def _pack_state(state: Any) -> Tensor:
    """Optimizer and scheduler ``state_dict``s as one byte tensor (loaded back with ``weights_only=True``)."""
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def _unpack_state(tensor: Tensor) -> Any:
    import io

    return torch.load(io.BytesIO(tensor.cpu().numpy().tobytes()), weights_only=True)


class ClientTrainer(_FabricWorker):
    """Trains one client job at a time on a reused module, as ``lightning.Trainer.fit`` would.

    A job is one fit of ``epochs`` epochs on the client's data: ``configure_optimizers``
    (every form Lightning accepts: an optimizer, lists, dicts with ``lr_scheduler``,
    ``interval``, ``frequency`` and ``monitor``), the training hooks in Lightning's order,
    automatic or manual optimization, gradient clipping and accumulation, schedulers stepped
    per step or epoch, ``self.log`` with Lightning's semantics (``on_step``, ``on_epoch``,
    ``reduce_fx``, ``torchmetrics`` objects). ``self.trainer`` is a :class:`JobTrainer`;
    ``current_epoch`` and ``global_step`` count within the job. See docs/models.md.

    Args:
        module: the LightningModule (this worker's own instance).
        train_dataset: the shared training set; a ``TensorDataset`` takes the fast path
            (held on the device, index batches, no DataLoader per job).
        client_indices: each client's index list into ``train_dataset``.
        epochs: local epochs per job (Lightning's ``max_epochs``).
        batch_size: local batch size.
        algorithm: the client-side method whose hooks run around local training
            (FedProx, SCAFFOLD); None is plain local training.
        accelerator: Fabric accelerator (``cpu``, ``cuda``, ``auto``).
        precision: Fabric precision (``32-true``, ``bf16-mixed``, ``16-mixed``).
        augment: train-time augmentation ``augment(x, generator) -> x`` applied to every
            training batch's features with the job's generator (see
            :meth:`FederatedDataModule.augment`); None for none.
        device: train on this device (``cpu``, ``cuda:1``) instead of the accelerator's
            first one; executors use it to spread workers over several GPUs.
        faults: injected faults (jobs that raise or send NaN), or None for none.
        accumulate_grad_batches: Lightning's ``accumulate_grad_batches``.
        gradient_clip_val: Lightning's ``gradient_clip_val`` (None: no clipping).
        gradient_clip_algorithm: ``norm`` or ``value``.
        keep_optimizer_state: keep each client's optimizer and scheduler state from one of
            its jobs to the next (in the client's state, checkpointed); False: fresh per job.
    """

    def __init__(
        self,
        module: L.LightningModule,
        train_dataset: Any,
        client_indices: Sequence[Tensor],
        *,
        epochs: int = 1,
        batch_size: int = 32,
        algorithm: ClientAlgorithm | None = None,
        accelerator: str = "cpu",
        precision: str = "32-true",
        augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
        device: str | None = None,
        faults: Faults | None = None,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        keep_optimizer_state: bool = False,
    ) -> None:
        check_client_settings(
            epochs=epochs, batch_size=batch_size, accelerator=accelerator, precision=precision, accumulate_grad_batches=accumulate_grad_batches,
            gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm, keep_optimizer_state=keep_optimizer_state,
        )  # fmt: skip
        super().__init__(module, accelerator=accelerator, precision=str(precision), device=device)
        self.dataset = _on_device(train_dataset, self.device)
        packed = PackedIndices.of(client_indices)
        self.client_indices = packed.to(self.device) if isinstance(self.dataset, _DeviceTensors) else packed
        self.epochs, self.batch_size = epochs, batch_size
        self.accumulate_grad_batches = accumulate_grad_batches
        self.gradient_clip_val = None if gradient_clip_val is None else float(gradient_clip_val)
        self.gradient_clip_algorithm = gradient_clip_algorithm
        self.keep_optimizer_state = keep_optimizer_state
        self.algorithm = algorithm if algorithm is not None else ClientAlgorithm()
        self.augment = augment
        self.faults = faults if faults is not None else Faults()
        self.view = JobTrainer(
            module, self.device, epochs=epochs, accumulate_grad_batches=accumulate_grad_batches, gradient_clip_val=self.gradient_clip_val,
            gradient_clip_algorithm=gradient_clip_algorithm, fabric_precision=self.fabric.strategy.precision,
        )  # fmt: skip
        module.trainer = self.view  # type: ignore[assignment]
        self._metrics = _has_torchmetrics(module)
        self._validated = False
        self._batch_idx_arg = is_param_in_hook_signature(module.training_step, "batch_idx", min_args=2)

    def job_dataloader(self, job: Job) -> DataLoader:
        """A DataLoader that yields exactly the batches ``job`` trains on, epoch after epoch
        (without augmentation): hand it to ``lightning.Trainer.fit`` to reproduce the job."""
        indices = self.client_indices[job.client_id]
        return DataLoader(self.dataset if not isinstance(self.dataset, _DeviceTensors) else TensorDataset(*(t.cpu() for t in self.dataset.tensors)), batch_size=self.batch_size, sampler=_EpochOrders(indices, job.seed))

    def _configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list[Any]]:
        """Lightning's own parsing of ``configure_optimizers()`` (every form it accepts)."""
        module = self.module
        config = call_hook(module, "configure_optimizers")
        if config is None:
            config = _MockOptimizer()
        optimizers, schedulers, monitor = _configure_optimizers(config)
        configs = _configure_schedulers_automatic_opt(schedulers, monitor) if module.automatic_optimization else _configure_schedulers_manual_opt(schedulers)
        if not self._validated:  # inspects training_step's signature: once is enough
            _validate_multiple_optimizers_support(optimizers, module)
            self._validated = True
        _validate_optimizers_attached(optimizers, configs)
        _validate_scheduler_api(configs, module)
        return optimizers, configs

    def memory_tensors(self) -> tuple[Tensor, ...] | None:
        """The training set's tensors, already on :attr:`device`, when it is an in-memory
        ``TensorDataset`` (batches are index gathers); None for any other dataset."""
        return self.dataset.tensors if isinstance(self.dataset, _DeviceTensors) else None

    def train(self, job: Job, base: ModelState, client_state: Mapping[str, Tensor] | None = None, *, limit_batches: int | None = None) -> JobResult:
        """Train ``job`` from ``base``; returns the trained state, the job's logged metrics
        and the client's persistent state after the job.

        Args:
            job: the job (client, seed, ...).
            base: the global model it starts from.
            client_state: the client's persistent tensors from its previous job (None or
                empty at its first); the input is not modified.
            limit_batches: train on at most this many batches per epoch (the model check
                before a run; None: all).

        What the client algorithm's ``after_training`` returns is in the state's ``side``.
        The metrics are what ``self.log`` sent to loggers: a value logged per step is the
        mean over the job's logged steps, a value logged per epoch (a ``Metric`` object's
        ``compute()``, or the ``reduce_fx`` of the epoch's values) that of the last epoch.
        """
        self.faults.before_training(job)
        self.load(base)
        module, view = self.module, self.view
        indices = self.client_indices[job.client_id]
        num_batches = -(-len(indices) // self.batch_size)
        if limit_batches is not None:
            num_batches = min(num_batches, limit_batches)
        view.start(num_batches)
        self.skipped_steps = 0  # training_step returned None (Lightning skips the batch)
        if self._metrics:
            _reset_torchmetrics(module)
        view.automatic = automatic = module.automatic_optimization
        optimizers, configs = self._configure_optimizers()
        own = {k: v.to(self.device) for k, v in (client_state or {}).items()}
        if self.keep_optimizer_state and OPTIMIZER_STATE_KEY in own:
            saved = _unpack_state(own[OPTIMIZER_STATE_KEY])
            for optimizer, state in zip(optimizers, saved["optimizers"]):
                optimizer.load_state_dict(state)
            for config, state in zip(configs, saved["schedulers"]):
                config.scheduler.load_state_dict(state)
        view.lr_scheduler_configs = configs
        view.wrap_optimizers(optimizers)
        lightning_optimizers = view.strategy._lightning_optimizers
        ctx = LocalTraining(job=job, module=module, base=base.to(self.device), flat=self.flat, optimizer=optimizers[0], client_state=own)
        if not automatic:
            def count_step() -> None:
                view.global_step += 1
            for optimizer in lightning_optimizers:
                optimizer._on_after_step = count_step
        generator = torch.Generator().manual_seed(job.seed)
        step_sums: dict[str, float] = {}
        step_counts: dict[str, int] = {}
        epoch_values: dict[str, float] = {}
        module.train()
        view.training = True
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices, device_type=self.device.type):
                _seed_device(self.device, job.seed)  # dropout and other in-model randomness, restored afterwards
                self.algorithm.before_training(ctx)
                hooks = num_batches > 0  # a client without data: no fit at all (Lightning skips a fit with no batches)
                if hooks:
                    call_hook(module, "on_fit_start")
                    call_hook(module, "on_train_start")
                for epoch in range(self.epochs if hooks else 0):
                    view.current_epoch = epoch
                    call_hook(module, "on_train_epoch_start")
                    for batch_idx, batch in enumerate(_batches(self.dataset, indices, self.batch_size, generator, self.device)):
                        if batch_idx >= num_batches:
                            break
                        batch = self.fabric.to_device(batch)
                        if self.augment is not None:
                            batch = (self.augment(batch[0], generator), *batch[1:])
                        last = batch_idx + 1 == num_batches
                        view._logger_connector.on_batch_start(view._results, batch)
                        if call_hook(module, "on_train_batch_start", batch, batch_idx) == -1:
                            self._step_schedulers("step", False, batch_idx, accumulating=False)
                            self._step_schedulers("epoch", False, batch_idx, accumulating=False)
                            break
                        accumulating = automatic and (batch_idx + 1) % self.accumulate_grad_batches != 0 and not last
                        if automatic:
                            output = self._automatic_step(batch, batch_idx, lightning_optimizers[0], accumulating, ctx)
                        else:
                            output = self._manual_step(batch, batch_idx)
                        self._step_schedulers("step", False, batch_idx, accumulating)
                        if last:
                            self._step_schedulers("epoch", False, batch_idx, accumulating)
                        call_hook(module, "on_train_batch_end", output, batch, batch_idx)
                        logged = view.batch_metrics()
                        if not accumulating:
                            for key, value in logged.items():
                                step_sums[key] = step_sums.get(key, 0.0) + float(value)
                                step_counts[key] = step_counts.get(key, 0) + 1
                        self._step_schedulers("step", True, batch_idx, accumulating)
                    view._logger_connector._first_loop_iter = None
                    call_hook(module, "on_train_epoch_end")
                    epoch_logged = view.epoch_metrics()
                    self._step_schedulers("epoch", True, batch_idx, accumulating=False)
                    epoch_values = {key: float(value) for key, value in epoch_logged.items()}
                    view._results.reset()
                    view._logger_connector.reset()
                    view.current_epoch = epoch + 1  # Lightning counts an epoch once it is complete
                if hooks:
                    call_hook(module, "on_train_end")
                    call_hook(module, "on_fit_end")
                side = self.algorithm.after_training(ctx)
        finally:
            view.training = False
            if self._metrics:
                _reset_torchmetrics(module)
        if self.keep_optimizer_state:
            ctx.client_state[OPTIMIZER_STATE_KEY] = _pack_state(
                {"optimizers": [o.state_dict() for o in optimizers], "schedulers": [c.scheduler.state_dict() for c in configs]}
            )
        metrics = {key: total / step_counts[key] for key, total in step_sums.items()}
        metrics.update(epoch_values)
        state = self.read()
        result = JobResult(state.with_side(**side) if side else state, metrics, ctx.client_state)
        return self.faults.after_training(job, result)

    def _training_step(self, batch: Any, batch_idx: int) -> Any:
        with self.fabric.autocast():
            if self._batch_idx_arg:
                return call_hook(self.module, "training_step", batch, batch_idx)
            return call_hook(self.module, "training_step", batch)

    def _automatic_step(self, batch: Any, batch_idx: int, optimizer: Any, accumulating: bool, ctx: LocalTraining) -> dict[str, Any]:
        """One batch of Lightning's automatic optimization: the closure (training_step,
        zero_grad at the start of an accumulation window, backward) and, unless accumulating,
        ``optimizer_step``."""
        module, view = self.module, self.view
        results: list[ClosureResult] = []

        def closure() -> Tensor | None:
            result = ClosureResult.from_training_step_output(self._training_step(batch, batch_idx), 1)
            loss = result.closure_loss
            if loss is not None:
                loss = self.algorithm.on_loss(ctx, loss)
                if self.accumulate_grad_batches > 1:
                    loss = loss / self.accumulate_grad_batches
                result.closure_loss = loss
            results.append(result)
            if loss is None:
                self.skipped_steps += 1
            if batch_idx % self.accumulate_grad_batches == 0:
                call_hook(module, "on_before_zero_grad", optimizer)
                call_hook(module, "optimizer_zero_grad", view.current_epoch, batch_idx, optimizer)
            if loss is not None:
                view.backward(loss)
                self.algorithm.after_backward(ctx)  # privacy hook: DP-SGD clips and noises the gradients here
            return loss

        if accumulating:
            closure()
        else:
            call_hook(module, "optimizer_step", view.current_epoch, batch_idx, optimizer, closure)
            view.global_step += 1
            ctx.steps += 1
            self.algorithm.after_optimizer_step(ctx)
        if not results:
            raise RuntimeError(f"{type(module).__name__}.optimizer_step did not call optimizer.step(closure=optimizer_closure); Lightning runs training_step inside that closure")
        result = results[-1]
        return {} if result.loss is None else result.asdict()

    def _manual_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        return ManualResult.from_training_step_output(self._training_step(batch, batch_idx)).asdict()

    def _step_schedulers(self, interval: str, plateau: bool, batch_idx: int, accumulating: bool) -> None:
        """Lightning's ``_update_learning_rates``: the schedulers of ``interval`` due now (automatic optimization only)."""
        view = self.view
        if not view.lr_scheduler_configs or not view.automatic or (interval == "step" and accumulating):
            return
        for config in view.lr_scheduler_configs:
            if plateau ^ config.reduce_on_plateau:
                continue
            index = (batch_idx if interval == "step" else view.current_epoch) + 1
            if config.interval != interval or index % config.frequency != 0:
                continue
            monitor = None
            if config.reduce_on_plateau:
                monitor = view.callback_metrics.get(config.monitor)
                if monitor is None:
                    if config.strict:
                        raise RuntimeError(
                            f"ReduceLROnPlateau of {type(self.module).__name__} monitors {config.monitor!r}, which was not logged; "
                            f"logged: {sorted(view.callback_metrics)}. Log it with self.log({config.monitor!r}, ...) or set 'strict': False"
                        )
                    continue
            call_hook(self.module, "lr_scheduler_step", config.scheduler, monitor)
