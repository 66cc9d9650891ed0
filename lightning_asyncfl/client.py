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
from lightning.fabric.loggers import Logger
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from lightning_asyncfl.client_algorithms.base import ClientAlgorithm, LocalTraining
from lightning_asyncfl.errors import checking, require_choice
from lightning_asyncfl.faults import Faults
from lightning_asyncfl.state import Job, JobResult, ModelState


ACCELERATORS = ["cpu", "cuda", "gpu", "mps", "auto"]
PRECISIONS = ["32-true", "32", "bf16-mixed", "16-mixed"]  # mixed precision keeps float32 data and weights


def check_client_settings(*, epochs: int = 1, batch_size: int = 32, accelerator: str = "cpu", precision: str = "32-true") -> None:
    """Raise :class:`InvalidValue` for the first client setting outside what is allowed."""
    with checking() as check:
        check(isinstance(epochs, int) and epochs >= 1, "epochs", epochs, "an integer >= 1")
        check(isinstance(batch_size, int) and batch_size >= 1, "batch_size", batch_size, "an integer >= 1")
        check(accelerator in ACCELERATORS, "accelerator", accelerator, "one of: " + ", ".join(ACCELERATORS))
        require_choice("precision", str(precision), PRECISIONS)


class MetricsCollector(Logger):
    """A Fabric logger that keeps what ``self.log`` sent, for the current job only."""

    def __init__(self) -> None:
        super().__init__()
        self.sums: dict[str, float] = {}
        self.weights: dict[str, float] = {}
        self.weight = 1.0  # weight of the values logged next (batch size in evaluation)

    @property
    def name(self) -> str:
        return "lightning_asyncfl"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value) * self.weight
            self.weights[key] = self.weights.get(key, 0.0) + self.weight

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def pop(self) -> dict[str, float]:
        """The weighted mean of each logged key since the last pop, and reset."""
        out = {key: self.sums[key] / self.weights[key] for key in self.sums}
        self.sums, self.weights = {}, {}
        return out


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
        self.collector = MetricsCollector()
        self.precision = str(precision)
        accelerator, devices = _fabric_device(accelerator, device)
        self.fabric = L.Fabric(accelerator=accelerator, devices=devices, precision=precision, loggers=[self.collector])
        self.module = module
        self.fabric_module = self.fabric.setup_module(module)
        self.device = self.fabric.device
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


def _optimizer(module: L.LightningModule) -> torch.optim.Optimizer:
    """The single optimizer ``configure_optimizers()`` returns, in any of Lightning's forms."""
    config = module.configure_optimizers()
    if isinstance(config, (list, tuple)) and config:
        config = config[0]
        if isinstance(config, (list, tuple)) and config:  # ([optimizers], [schedulers])
            config = config[0]
    if isinstance(config, Mapping):
        config = config["optimizer"]
    if not isinstance(config, torch.optim.Optimizer):
        raise TypeError(f"{type(module).__name__}.configure_optimizers() must return an optimizer, got {config!r}")
    return config


class ClientTrainer(_FabricWorker):
    """Trains one client job at a time on a reused module.

    Args:
        module: the LightningModule (this worker's own instance).
        train_dataset: the shared training set; a ``TensorDataset`` takes the fast path
            (held on the device, index batches, no DataLoader per job).
        client_indices: each client's index list into ``train_dataset``.
        epochs: local epochs per job.
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
    ) -> None:
        check_client_settings(epochs=epochs, batch_size=batch_size, accelerator=accelerator, precision=precision)
        super().__init__(module, accelerator=accelerator, precision=str(precision), device=device)
        self.dataset = _on_device(train_dataset, self.device)
        packed = PackedIndices.of(client_indices)
        self.client_indices = packed.to(self.device) if isinstance(self.dataset, _DeviceTensors) else packed
        self.epochs, self.batch_size = epochs, batch_size
        self.algorithm = algorithm if algorithm is not None else ClientAlgorithm()
        self.augment = augment
        self.faults = faults if faults is not None else Faults()

    def train(self, job: Job, base: ModelState, client_state: Mapping[str, Tensor] | None = None) -> JobResult:
        """Train ``job`` from ``base``; returns the trained state, the mean logged metrics
        and the client's persistent state after the job.

        Args:
            job: the job (client, seed, ...).
            base: the global model it starts from.
            client_state: the client's persistent tensors from its previous job (None or
                empty at its first); the input is not modified.

        What the client algorithm's ``after_training`` returns is in the state's ``side``.
        """
        self.faults.before_training(job)
        self.load(base)
        optimizer = self.fabric.setup_optimizers(_optimizer(self.module))
        own = {k: v.to(self.device) for k, v in (client_state or {}).items()}
        ctx = LocalTraining(job=job, module=self.module, base=base.to(self.device), flat=self.flat, optimizer=optimizer, client_state=own)
        generator = torch.Generator().manual_seed(job.seed)
        indices = self.client_indices[job.client_id]
        self.collector.pop()
        self.module.train()
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=self.device.type):
            _seed_device(self.device, job.seed)  # dropout and other in-model randomness, restored afterwards
            self.algorithm.before_training(ctx)
            for _ in range(self.epochs):
                for batch in _batches(self.dataset, indices, self.batch_size, generator, self.device):
                    batch = self.fabric.to_device(batch)
                    if self.augment is not None:
                        batch = (self.augment(batch[0], generator), *batch[1:])
                    with self.fabric.autocast():
                        loss = self.module.training_step(batch, ctx.steps)
                    if isinstance(loss, Mapping):
                        loss = loss["loss"]
                    loss = self.algorithm.on_loss(ctx, loss)
                    optimizer.zero_grad(set_to_none=True)
                    self.fabric.backward(loss)
                    optimizer.step()
                    ctx.steps += 1
                    self.algorithm.after_optimizer_step(ctx)
            side = self.algorithm.after_training(ctx)
        state = self.read()
        result = JobResult(state.with_side(**side) if side else state, self.collector.pop(), ctx.client_state)
        return self.faults.after_training(job, result)


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

    Returns the sample-weighted mean of every value ``validation_step`` logs, prefixed
    with ``test_`` (the built-in models log ``loss`` and ``accuracy``), then the same on
    ``val_dataset`` prefixed with ``val_`` when there is one.
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
        self.splits = [("test_", test_dataset)] + ([("val_", val_dataset)] if val_dataset is not None else [])
        self.splits = [(prefix, _on_device(d, self.device), self._indices(d)) for prefix, d in self.splits]
        self.dataset, self.indices = self.splits[0][1], self.splits[0][2]
        self.batch_size = batch_size

    def _indices(self, dataset: Any) -> Tensor:
        return torch.arange(len(dataset), device=self.device if isinstance(dataset, TensorDataset) else None)

    def evaluate(self, state: ModelState) -> dict[str, float]:
        """Test (and validation) metrics of ``state``."""
        self.load(state)
        self.module.eval()
        out: dict[str, float] = {}
        for prefix, dataset, indices in self.splits:
            self.collector.pop()
            with torch.inference_mode():
                for i, batch in enumerate(_batches(dataset, indices, self.batch_size, None, self.device)):
                    batch = self.fabric.to_device(batch)
                    self.collector.weight = float(len(batch[0]))
                    with self.fabric.autocast():
                        self.module.validation_step(batch, i)
            self.collector.weight = 1.0
            out.update({f"{prefix}{key}": value for key, value in self.collector.pop().items()})
        return out


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
