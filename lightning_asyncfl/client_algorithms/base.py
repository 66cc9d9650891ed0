"""ClientAlgorithm: hooks the client trainer calls around a job's local training.

A client-side method (FedProx's proximal term, SCAFFOLD's control variates) is a small
subclass; the trainer calls, for every job: :meth:`before_training` once, :meth:`on_loss`
on every step's loss (return the loss to minimise), :meth:`after_optimizer_step` after
every step, and :meth:`after_training` once, whose tensors travel to the server with the
update (``update.state.side``). A client's own persistent tensors (SCAFFOLD's c_i) live in
:attr:`LocalTraining.client_state`: the loop keeps them between the client's jobs and hands
them to whichever worker trains the client next, so they survive any executor (threads,
processes, Ray). The algorithm object itself holds only per-job scratch values; every
worker has its own copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from lightning_asyncfl.context import SetupContext
from lightning_asyncfl.state import Job, ModelState


@dataclass
class LocalTraining:
    """What a hook can see of the job being trained.

    Attributes:
        job: the job (client id, seed, base version, ...).
        module: the LightningModule being trained.
        base: the global model the job started from, on the training device (its
            :attr:`ModelState.side` holds what the server sends, e.g. ``control``).
        flat: the module's live flat vector (parameters first, then float buffers).
        optimizer: this job's optimizer.
        steps: optimizer steps taken so far.
        client_state: this client's persistent tensors from its previous job (empty at
            its first); what a hook leaves here is kept for the client's next job.
    """

    job: Job
    module: L.LightningModule
    base: ModelState
    flat: Tensor
    optimizer: torch.optim.Optimizer
    steps: int = 0
    client_state: dict[str, Tensor] = field(default_factory=dict)

    @property
    def parameters(self) -> list[nn.Parameter]:
        """The module's parameters, in the order of the flat vector."""
        return list(self.module.parameters())

    @property
    def base_parameters(self) -> list[Tensor]:
        """Views of the base model's parameters, in the order of :attr:`parameters`."""
        return self.base.layout.parameter_views(self.base.flat)

    @property
    def lr(self) -> float:
        """The learning rate of the optimizer's first parameter group."""
        return float(self.optimizer.param_groups[0]["lr"])


class ClientAlgorithm:
    """Plain local training: every hook leaves things as they are (``client_algorithm=none``)."""

    def setup(self, context: SetupContext) -> None:
        """Called once before the run with what the run is (:class:`~lightning_asyncfl.context.SetupContext`)."""

    def before_training(self, ctx: LocalTraining) -> None:
        """Called before the job's first step."""

    def on_loss(self, ctx: LocalTraining, loss: Tensor) -> Tensor:
        """The loss to minimise at this step (default: ``loss`` unchanged)."""
        return loss

    def after_backward(self, ctx: LocalTraining) -> None:
        """Called after every backward pass, before the optimizer uses the gradients (DP-SGD's clip and noise)."""

    def after_optimizer_step(self, ctx: LocalTraining) -> None:
        """Called after every optimizer step."""

    def after_training(self, ctx: LocalTraining) -> dict[str, Tensor]:
        """Called after the last step; the returned tensors travel with the update."""
        return {}

    def upload_side_bytes(self, base: ModelState) -> int:
        """Bytes a client sends besides its model for a job that starts from ``base`` (default: 0)."""
        return 0

    def state_dict(self) -> dict[str, Any]:
        """Client-side state to checkpoint (tensors and plain values)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"
