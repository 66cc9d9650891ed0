"""check_model: before a run, a trial client job and a trial evaluation of the user's module."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor

from lightning_asyncfl.client.evaluator import Evaluator
from lightning_asyncfl.client.trainer import ClientTrainer
from lightning_asyncfl.client_algorithms.base import ClientAlgorithm
from lightning_asyncfl.data.packed import PackedIndices
from lightning_asyncfl.errors import ConfigError
from lightning_asyncfl.job_trainer import module_problems
from lightning_asyncfl.state import Job, ModelState


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
