"""BatchedExecutor: train many in-flight clients at once with ``torch.func``.

The clients of one experiment share one architecture, so B of them are one model with a
leading client dimension: their parameters are stacked, ``torch.func.vmap`` over
``functional_call`` computes all B forward and backward passes in one set of kernels, and
the SGD step is applied to the stack. On a GPU that turns B small kernels into one large
one. Each client keeps its own batch order (from its job's seed), its own number of
steps (a client out of batches stops moving: its step is multiplied by 0) and its own
last, smaller batch (padded and masked, so the loss is the mean over its real samples).

Results equal the per-client path's within floating-point tolerance (the summation order
of a padded, batched kernel differs), not bit for bit. Models that do not fit (BatchNorm
or other buffers, recurrent or attention layers, dropout, an overridden ``training_step``,
a non-SGD optimizer, a client algorithm, train-time augmentation, mixed precision, a
dataset that is not in memory, an overridden training hook or ``configure_optimizers``,
manual optimization, gradient accumulation or clipping, optimizer state kept per client)
train on the per-client path, and the executor says why once, at start.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

import lightning as L

from lightning_asyncfl.client import ClientTrainer, intra_op_threads
from lightning_asyncfl.client_algorithms.base import ClientAlgorithm
from lightning_asyncfl.errors import checking
from lightning_asyncfl.executors.base import TrainerFactory
from lightning_asyncfl.executors.sequential import SequentialExecutor
from lightning_asyncfl.state import Job, JobResult, ModelState

log = logging.getLogger(__name__)

#: hooks of a client job that the batched SGD does not run: a module overriding one trains per client
TRAINING_HOOKS = (
    "configure_optimizers", "on_fit_start", "on_train_start", "on_train_epoch_start", "on_train_batch_start",
    "on_before_backward", "backward", "on_after_backward", "on_before_optimizer_step", "configure_gradient_clipping",
    "optimizer_step", "on_before_zero_grad", "optimizer_zero_grad", "on_train_batch_end", "on_train_epoch_end",
    "on_train_end", "on_fit_end", "lr_scheduler_step",
)  # fmt: skip


def why_not_batched(trainer: ClientTrainer) -> str | None:
    """Why ``trainer``'s jobs cannot be trained batched, or None when they can."""
    module = trainer.module
    plain_sgd = getattr(module, "plain_sgd", None)  # the model's word that a step is cross-entropy of forward then SGD
    if not callable(plain_sgd):
        return f"{type(module).__name__} has no plain_sgd() saying its training step is cross-entropy of forward then SGD (see ClassifierModule)"
    sgd = plain_sgd()
    overridden = [hook for hook in TRAINING_HOOKS if hook != "configure_optimizers" and getattr(type(module), hook) is not getattr(L.LightningModule, hook)]
    if overridden:
        return f"{type(module).__name__} overrides {', '.join(overridden)}"
    if not module.automatic_optimization:
        return f"{type(module).__name__} uses manual optimization"
    if trainer.accumulate_grad_batches != 1 or trainer.gradient_clip_val is not None:
        return "gradient accumulation or clipping (client.accumulate_grad_batches, client.gradient_clip_val)"
    if trainer.keep_optimizer_state:
        return "client.keep_optimizer_state keeps each client's optimizer state between its jobs"
    if list(module.buffers()):
        return f"{type(module).__name__} has buffers (BatchNorm statistics), which change in training"
    slow = sorted({type(m).__name__ for m in module.modules() if isinstance(m, (nn.RNNBase, nn.MultiheadAttention))})
    if slow:
        return f"{type(module).__name__} has {', '.join(slow)} layers, which torch.func.vmap runs one client at a time (no batching rule)"
    if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in module.modules()):
        return f"{type(module).__name__} uses dropout (randomness inside the model)"
    if sgd is None:
        optimizer = getattr(module, "optimizer_name", "not plain SGD")
        return f"the optimizer is {optimizer}, or training_step/configure_optimizers are overridden: only the built-in step with sgd is batched"
    if type(trainer.algorithm) is not ClientAlgorithm:
        return f"client algorithm {type(trainer.algorithm).__name__} hooks into each step"
    if trainer.augment is not None:
        return "the dataset has train-time augmentation"
    if trainer.faults.active:
        return "faults are injected into client training"
    if str(trainer.precision) not in ("32-true", "32"):
        return "mixed precision"
    if trainer.memory_tensors() is None:
        return "the training set is not an in-memory TensorDataset"
    return None


def batched_sgd(
    module: nn.Module, starts: Tensor, names: Sequence[str], shapes: Sequence[torch.Size],
    x: Tensor, y: Tensor, index: Tensor, *, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """SGD for B clients at once.

    Args:
        module: the architecture (its own parameters are not used).
        starts: ``[B, P]`` each client's starting parameters, flat, in ``names`` order.
        names, shapes: the parameters' names and shapes.
        x, y: the training set's features and labels.
        index: ``[S, B, batch]`` sample indices of each step and client, -1 for padding; a
            client with no real sample at a step does not move at that step.
        lr, momentum, weight_decay: torch.optim.SGD's (no dampening, no Nesterov).

    Returns:
        ``[B, P]`` trained parameters and ``[B]`` each client's mean loss over its steps.
    """
    B = starts.shape[0]
    sizes = [s.numel() for s in shapes]
    params = {n: p.reshape(B, *s) for n, p, s in zip(names, starts.split(sizes, dim=1), shapes)}
    buffers = {n: None for n in names}

    def loss(p: dict[str, Tensor], xb: Tensor, yb: Tensor, mask: Tensor) -> Tensor:
        losses = F.cross_entropy(functional_call(module, p, (xb,)), yb, reduction="none")
        return (losses * mask).sum() / mask.sum().clamp_min(1.0)

    step = vmap(grad_and_value(loss))
    total = torch.zeros(B, device=starts.device)
    count = torch.zeros(B, device=starts.device)
    for s in range(index.shape[0]):
        idx = index[s]
        real = idx >= 0
        safe = idx.clamp_min(0)
        mask = real.to(starts.dtype)
        active = real.any(dim=1).to(starts.dtype)
        grads, value = step(params, x[safe], y[safe], mask)
        total += value * active
        count += active
        for n in names:
            g = grads[n]
            if weight_decay:
                g = g + weight_decay * params[n]
            if momentum:
                buffers[n] = g if buffers[n] is None else momentum * buffers[n] + g
                g = buffers[n]
            shaped = active.view(B, *([1] * (g.dim() - 1)))
            params[n] = params[n] - lr * shaped * g
    trained = torch.cat([params[n].reshape(B, -1) for n in names], dim=1)
    return trained, total / count.clamp_min(1.0)


class BatchedExecutor(SequentialExecutor):
    """Trains up to ``max_batch`` pending jobs at once, stacked along a client dimension.

    Like :class:`SequentialExecutor` it trains in the loop's thread when a result is
    needed; the job needed then is trained together with the pending jobs needed next.

    Args:
        max_batch: the most clients trained together (B).
        num_threads: PyTorch intra-op threads while training (on the CPU).
    """

    def __init__(self, *, max_batch: int = 64, num_threads: int | str | None = "auto") -> None:
        with checking() as check:
            check(isinstance(max_batch, int) and not isinstance(max_batch, bool) and max_batch >= 1, "max_batch", max_batch, "an integer >= 1")
            super().__init__(num_threads=num_threads)
        self.max_batch = max_batch
        self._reason: str | None = None
        self._jobs: dict[int, Job] = {}
        self.batches: list[int] = []  # size of every batch trained, for the curious

    def start(self, make_trainer: TrainerFactory) -> None:
        super().start(make_trainer)
        assert self._trainer is not None
        self._reason = why_not_batched(self._trainer)
        if self._reason is not None:
            log.warning("BatchedExecutor trains one client at a time: %s", self._reason)

    def submit(self, job: Job, base: ModelState, client_state: Mapping[str, Tensor] | None = None) -> None:
        super().submit(job, base, client_state)
        self._jobs[job.job_id] = job

    def _train(self, job: Job) -> JobResult:
        if self._reason is not None:
            self._jobs.pop(job.job_id, None)
            return super()._train(job)
        with intra_op_threads(self.num_threads):
            self._train_batch(job)
        outcome = self._done.pop(job.job_id)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _train_batch(self, needed: Job) -> None:
        trainer = self._trainer
        assert trainer is not None
        queue = sorted(self._jobs.values(), key=lambda j: (j.job_id != needed.job_id, j.arrival_time, j.job_id))
        group = [(job, *self._pending.pop(job.job_id)) for job in queue[: self.max_batch]]
        for job, _, _ in group:
            del self._jobs[job.job_id]
        self.batches.append(len(group))
        module = trainer.module
        layout = group[0][1].layout
        names = layout.names[: layout.num_parameters]
        shapes = layout.shapes[: layout.num_parameters]
        device = trainer.device
        starts = torch.stack([base.flat.to(device) for _, base, _ in group])
        index = self._index(group)
        x, y = trainer.memory_tensors()
        try:
            trained, losses = batched_sgd(
                module, starts, names, shapes, x, y, index,
                **module.plain_sgd(),
            )  # fmt: skip
        except Exception as error:  # the whole batch failed: each job on its own
            log.warning("batched training of %d jobs failed (%s: %s); training them one at a time", len(group), type(error).__name__, error)
            for job, base, client_state in group:
                try:
                    self._done[job.job_id] = trainer.train(job, base, client_state)
                except Exception as job_error:
                    self._done[job.job_id] = job_error
            return
        for k, (job, base, _) in enumerate(group):
            state = ModelState(trained[k].detach().clone(), base.layout, dict(base.extras))
            metrics = {"loss": float(losses[k])} if bool(index[:, k].ge(0).any()) else {}
            self._done[job.job_id] = JobResult(state, metrics, {})

    def _index(self, group: list[tuple[Job, ModelState, Any]]) -> Tensor:
        """``[S, B, batch]`` sample indices: each job's batches in its own seeded order, -1 padded."""
        trainer = self._trainer
        assert trainer is not None
        bs, epochs = trainer.batch_size, trainer.epochs
        per_job = []
        for job, _, _ in group:
            indices = trainer.client_indices[job.client_id]
            generator = torch.Generator().manual_seed(job.seed)
            steps = []
            for _ in range(epochs):  # the per-client path's draws, epoch after epoch
                order = indices[torch.randperm(len(indices), generator=generator).to(indices.device)]
                steps += [order[s : s + bs] for s in range(0, len(order), bs)]
            per_job.append(steps)
        S = max((len(steps) for steps in per_job), default=0)
        index = torch.full((S, len(group), bs), -1, dtype=torch.long, device=trainer.device)
        for k, steps in enumerate(per_job):
            for s, batch in enumerate(steps):
                index[s, k, : len(batch)] = batch
        return index

    def cancel(self, job: Job) -> None:
        super().cancel(job)
        self._jobs.pop(job.job_id, None)

    def shutdown(self) -> None:
        super().shutdown()
        self._jobs.clear()

    def __repr__(self) -> str:
        return f"BatchedExecutor(max_batch={self.max_batch}, num_threads={self.num_threads})"
