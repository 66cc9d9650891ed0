"""ThreadExecutor: N worker threads in the loop's process, each with its own module replica.

The natural choice for one or several GPUs in one machine: each worker trains on its own
CUDA stream and its own device from ``devices`` (round-robin), so copies and kernels of
different clients overlap. On the CPU, PyTorch's kernels release the GIL, so workers
overlap there too, each with ``num_threads`` intra-op threads (split the cores: 2 workers
× 1 thread on 2 cores). Each worker's result is the same bytes as the sequential
executor's with the same ``num_threads``.

Caveat: PyTorch has one global random generator per process; a model that draws from it
while training (``nn.Dropout``) makes thread workers race on it, so such a model is
deterministic with the sequential and processes executors only. The built-in models'
randomness (batch order, augmentation) comes from each job's own generator.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lightning_asyncfl.client import ClientTrainer, intra_op_threads
from lightning_asyncfl.executors.base import TrainerFactory
from lightning_asyncfl.executors.pool import ParallelExecutor
from lightning_asyncfl.state import Job, JobResult, ModelState


@dataclass
class _ThreadWorker:
    trainer: ClientTrainer
    stream: Any  # a torch.cuda.Stream on a GPU, else None


class ThreadExecutor(ParallelExecutor):
    """N worker threads, each with its own trainer (and CUDA stream on a GPU).

    Args:
        workers: number of worker threads.
        num_threads: PyTorch intra-op threads of each worker while it trains.
        devices: devices the workers train on, round-robin (``[cuda:0, cuda:1]``), ``auto``
            for every visible GPU, null for the client accelerator's default device.
    """

    def _open(self, index: int, device: str | None, make_trainer: TrainerFactory) -> _ThreadWorker:
        with intra_op_threads(self.num_threads):
            trainer = make_trainer(device=device) if device is not None else make_trainer()
        stream = torch.cuda.Stream(trainer.device) if trainer.device.type == "cuda" else None
        return _ThreadWorker(trainer, stream)

    def _execute(self, index: int, handle: _ThreadWorker, job: Job, payload: ModelState, client_state: Mapping[str, Tensor] | None) -> JobResult:
        on_stream = torch.cuda.stream(handle.stream) if handle.stream is not None else contextlib.nullcontext()
        with intra_op_threads(self.num_threads), on_stream:
            if handle.stream is not None and payload.flat.is_cuda:  # the base was written on the loop's stream
                handle.stream.wait_stream(torch.cuda.default_stream(payload.flat.device))
            result = handle.trainer.train(job, payload, client_state)
        if handle.stream is not None:
            handle.stream.synchronize()  # the loop reads the result on its own stream
        return result
