"""What every client worker shares: a LightningModule set up with Fabric, its state one flat tensor.

:class:`_FabricWorker` is the base of :class:`~lightning_asyncfl.client.ClientTrainer` and
:class:`~lightning_asyncfl.client.Evaluator`: one module instance per worker, set up with
Fabric once, its floating parameters and buffers re-bound as views of one flat tensor (so
installing a global model is one ``copy_`` and reading it one ``clone``). Also the
worker's environment: resetting ``torchmetrics`` state between jobs, seeding one device's
generator, and the number of intra-op threads a job runs with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from lightning_asyncfl.state import ModelState


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


def _reset_torchmetrics(module: nn.Module) -> None:
    """Reset every ``torchmetrics.Metric`` the module holds: metric state never crosses a job or an evaluation."""
    from torchmetrics import Metric

    for sub in module.modules():
        if isinstance(sub, Metric):
            sub.reset()


def _has_torchmetrics(module: nn.Module) -> bool:
    from torchmetrics import Metric

    return any(isinstance(sub, Metric) for sub in module.modules())


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
