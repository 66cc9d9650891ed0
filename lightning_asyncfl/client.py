"""ClientTrainer and Evaluator: run a LightningModule's hooks through Lightning Fabric.

No ``lightning.Trainer`` is built per client (its per-fit set-up would dominate small
client jobs). One module instance per worker is set up with Fabric once; its parameters
and floating buffers are then re-bound as views of one flat tensor, so installing a global
model is a single ``copy_`` and reading the trained model a single ``clone``. Each job gets
a fresh optimizer from ``configure_optimizers()`` and its own random stream (batch order,
dropout) from the job's seed. ``self.log`` inside the module reaches Fabric's loggers; a
collector among them turns the logged values of a job into the update's metrics (mean
over the job's steps).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from lightning.pytorch.core.optimizer import _configure_optimizers, _configure_schedulers_automatic_opt, _configure_schedulers_manual_opt, _MockOptimizer, _validate_multiple_optimizers_support, _validate_optimizers_attached, _validate_scheduler_api
from lightning.pytorch.loops.optimization.automatic import ClosureResult
from lightning.pytorch.loops.optimization.manual import ManualResult
from lightning.pytorch.utilities.signature_utils import is_param_in_hook_signature
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler, Subset, TensorDataset

from lightning_asyncfl.client_algorithms.base import ClientAlgorithm, LocalTraining
from lightning_asyncfl.errors import ConfigError, checking, require_choice
from lightning_asyncfl.faults import Faults
from lightning_asyncfl.job_trainer import GRADIENT_CLIP_ALGORITHMS, JobTrainer, call_hook, module_problems
from lightning_asyncfl.state import Job, JobResult, ModelState


ACCELERATORS = ["cpu", "cuda", "gpu", "mps", "auto"]
PRECISIONS = ["32-true", "32", "bf16-mixed", "16-mixed"]  # mixed precision keeps float32 data and weights


def check_client_settings(
    *, epochs: int = 1, batch_size: int = 32, accelerator: str = "cpu", precision: str = "32-true",
    accumulate_grad_batches: int = 1, gradient_clip_val: float | None = None, gradient_clip_algorithm: str = "norm",
    keep_optimizer_state: bool = False,
) -> None:  # fmt: skip
    """Raise :class:`InvalidValue` (or several) for every client setting outside what is allowed."""
    with checking() as check:
        check(isinstance(epochs, int) and epochs >= 1, "epochs", epochs, "an integer >= 1")
        check(isinstance(batch_size, int) and batch_size >= 1, "batch_size", batch_size, "an integer >= 1")
        check(accelerator in ACCELERATORS, "accelerator", accelerator, "one of: " + ", ".join(ACCELERATORS))
        require_choice("precision", str(precision), PRECISIONS)
        check(isinstance(accumulate_grad_batches, int) and not isinstance(accumulate_grad_batches, bool) and accumulate_grad_batches >= 1, "accumulate_grad_batches", accumulate_grad_batches, "an integer >= 1")
        check(gradient_clip_val is None or (isinstance(gradient_clip_val, (int, float)) and not isinstance(gradient_clip_val, bool) and gradient_clip_val >= 0), "gradient_clip_val", gradient_clip_val, "null or a number >= 0")
        check(gradient_clip_algorithm in GRADIENT_CLIP_ALGORITHMS, "gradient_clip_algorithm", gradient_clip_algorithm, "one of: " + ", ".join(GRADIENT_CLIP_ALGORITHMS))
        check(isinstance(keep_optimizer_state, bool), "keep_optimizer_state", keep_optimizer_state, "true or false")


def _fabric_device(accelerator: str, device: str | None) -> tuple[str, Any]:
    """Fabric's (accelerator, devices) for an explicit ``device`` (``cpu``, ``cuda:1``), else one of ``accelerator``."""
    if device is None:
        return accelerator, 1
    parsed = torch.device(device)
    if parsed.type == "cpu":
        return "cpu", 1
    return parsed.type, [parsed.index or 0]


def _owner(module: nn.Module, name: str) -> tuple[nn.Module, str]:
    *path, attr = name.split(".")
    for part in path:
        module = getattr(module, part)
    return module, attr


class _FabricWorker:
    """A LightningModule set up with Fabric, its floating state bound to one flat tensor."""

    def __init__(self, module: L.LightningModule, *, accelerator: str = "cpu", precision: str = "32-true", device: str | None = None) -> None:
        self.precision = str(precision)
        accelerator, devices = _fabric_device(accelerator, device)
        self.fabric = L.Fabric(accelerator=accelerator, devices=devices, precision=precision)
        self.module = module
        self.fabric_module = self.fabric.setup_module(module)
        self.device = self.fabric.device
        module.fabric = None  # the module runs under a JobTrainer (self.log, self.optimizers(), ...), not Fabric's shim
        state = ModelState.from_module(module)
        self.layout = state.layout
        self.flat = self._bind(state)

    def _bind(self, state: ModelState) -> Tensor:
        """Make every floating parameter and buffer a view of one flat tensor."""
        tensors = {**dict(self.module.named_parameters()), **dict(self.module.named_buffers())}
        if len({tensors[n].dtype for n in self.layout.names}) > 1:
            raise TypeError(f"{type(self.module).__name__} mixes floating dtypes; use one dtype for all parameters")
        flat = state.flat.to(self.device).clone()
        for name, view in self.layout.views(flat).items():
            owner, attr = _owner(self.module, name)
            tensor = tensors[name]
            if isinstance(tensor, nn.Parameter):
                tensor.data = view
            else:
                owner._buffers[attr] = view
        return flat

    def load(self, state: ModelState) -> None:
        """Install ``state`` into the module (one copy)."""
        if state.layout != self.layout:
            raise ValueError("the model state's layout does not match the module")
        self.flat.copy_(state.flat)
        for name, value in state.extras.items():
            owner, attr = _owner(self.module, name)
            owner._buffers[attr].copy_(value)

    def read(self) -> ModelState:
        """The module's current state, as a new flat state on the CPU-or-device of the worker."""
        extras = {n: b.detach().clone() for n, b in self.module.named_buffers() if not b.is_floating_point()}
        return ModelState(self.flat.clone(), self.layout, extras)


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


class PackedIndices(Sequence[Tensor]):
    """Every client's index list as a slice of one flat tensor.

    With 100,000 clients a list of tensors is 100,000 Python objects to build, copy to a
    device, pickle to a worker process (one shared-memory handle each) or put in Ray's
    object store; packed, it is two tensors, and ``packed[k]`` is a view, made when asked.
    """

    def __init__(self, flat: Tensor, offsets: Tensor) -> None:
        self.flat, self.offsets = flat, offsets
        self._bounds: list[int] | None = None

    @classmethod
    def of(cls, lists: Sequence[Tensor]) -> PackedIndices:
        """``lists`` packed (returned as is if already packed)."""
        if isinstance(lists, PackedIndices):
            return lists
        sizes = torch.tensor([len(t) for t in lists], dtype=torch.long)
        offsets = torch.zeros(len(lists) + 1, dtype=torch.long)
        torch.cumsum(sizes, 0, out=offsets[1:])
        flat = torch.cat([torch.as_tensor(t, dtype=torch.long).reshape(-1) for t in lists]) if lists else torch.zeros(0, dtype=torch.long)
        return cls(flat, offsets)

    def to(self, device: torch.device | str) -> PackedIndices:
        """The same lists with the flat tensor on ``device``."""
        return PackedIndices(self.flat.to(device), self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, k: int) -> Tensor:  # type: ignore[override]
        if self._bounds is None:
            self._bounds = self.offsets.tolist()
        return self.flat[self._bounds[k] : self._bounds[k + 1]]

    def __getstate__(self) -> dict[str, Any]:
        return {"flat": self.flat, "offsets": self.offsets, "_bounds": None}


#: the client-state key under which a client's optimizer and scheduler state travel (client.keep_optimizer_state)
OPTIMIZER_STATE_KEY = "lightning_asyncfl.optimizer_state"


def _reset_torchmetrics(module: nn.Module) -> None:
    """Reset every ``torchmetrics.Metric`` the module holds: metric state never crosses a job or an evaluation."""
    from torchmetrics import Metric

    for sub in module.modules():
        if isinstance(sub, Metric):
            sub.reset()


def _has_torchmetrics(module: nn.Module) -> bool:
    from torchmetrics import Metric

    return any(isinstance(sub, Metric) for sub in module.modules())


def _pack_state(state: Any) -> Tensor:
    """Optimizer and scheduler ``state_dict``s as one byte tensor (loaded back with ``weights_only=True``)."""
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def _unpack_state(tensor: Tensor) -> Any:
    import io

    return torch.load(io.BytesIO(tensor.cpu().numpy().tobytes()), weights_only=True)


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


def check_model(
    module: L.LightningModule, train_dataset: Any, client_indices: Sequence[Tensor], test_dataset: Any, *,
    settings: Mapping[str, Any], algorithm: ClientAlgorithm | None = None, eval_batch_size: int = 1024, trial_batches: int = 2,
) -> list[str]:  # fmt: skip
    """Check, before a run, that ``module`` can train in client jobs and be evaluated.

    First what it overrides or asks for that a client job cannot honour (see
    :func:`lightning_asyncfl.job_trainer.module_problems`), then a trial: one job of
    ``trial_batches`` batches on a copy of the module (the first client with data) and an
    evaluation of ``trial_batches`` test batches, so that an error in a hook, a
    ``self.trainer`` attribute a job does not have, a ``training_step`` that returns None
    or a ``validation_step`` that logs nothing is reported before any training. Nothing
    of the module, the global random state or the data changes.

    Returns:
        the names the trial job logged (the columns of the update metrics).

    Raises:
        ConfigError: every problem found, each naming the module, the feature and what to do.
    """
    name = type(module).__name__
    settings = dict(settings)
    problems = module_problems(
        module, accumulate_grad_batches=int(settings.get("accumulate_grad_batches", 1)),
        gradient_clip_val=settings.get("gradient_clip_val"), algorithm=algorithm,
    )  # fmt: skip
    if problems:
        raise ConfigError(problems)
    packed = PackedIndices.of(client_indices)
    client = next((k for k in range(len(packed)) if len(packed[k]) > 0), None)
    logged: list[str] = []
    with torch.random.fork_rng(devices=[]):
        if client is not None:
            job = Job(job_id=-1, client_id=client, base_version=0, seed=0, dispatch_time=0.0, arrival_time=0.0)
            try:
                trainer = ClientTrainer(copy.deepcopy(module), train_dataset, packed, **settings)
                result = trainer.train(job, ModelState.from_module(module), limit_batches=trial_batches)
            except Exception as error:
                raise ConfigError([f"{name} failed in a trial client job before the run: {type(error).__name__}: {error}"]) from error
            if module.automatic_optimization and trainer.skipped_steps == trainer.view.num_training_batches:
                problems.append(
                    f"{name}.training_step returned None on every batch of a trial job: with automatic optimization it must "
                    "return the loss (a Tensor, or a dict with 'loss'); None skips the batch"
                )
            logged = sorted(result.metrics)
        try:
            metrics = Evaluator(copy.deepcopy(module), test_dataset, batch_size=eval_batch_size, accelerator=settings.get("accelerator", "cpu")).evaluate(
                ModelState.from_module(module), limit_batches=trial_batches
            )
        except Exception as error:
            raise ConfigError([f"{name} failed in a trial evaluation before the run: {type(error).__name__}: {error}"]) from error
        if not metrics:
            problems.append(
                f"{name}.validation_step logs nothing: the run evaluates the global model with validation_step and reports what it "
                "logs as test_* (e.g. self.log('loss', loss); self.log('accuracy', acc) for the accuracy curve and server.target_accuracy)"
            )
    if problems:
        raise ConfigError(problems)
    return logged


def _seed_device(device: torch.device, seed: int) -> None:
    """Seed the default generator of ``device`` only (the CPU's, or one GPU's).

    ``torch.manual_seed`` would also queue a lazy seeding of every CUDA, XPU and MTIA device
    and format a stack trace for each, about 0.7 ms per job on a machine without them.
    """
    if device.type == "cuda":
        torch.cuda.default_generators[device.index or 0].manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed)


@contextlib.contextmanager
def intra_op_threads(num_threads: int | None) -> Iterator[None]:
    """Run with ``num_threads`` PyTorch intra-op threads (None: leave as is), restored after."""
    if num_threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
