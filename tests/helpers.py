"""Small in-memory building blocks for loop and trainer tests (no Hydra, no files)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from lightning_asyncfl.callbacks import Callback
from lightning_asyncfl.client import ClientTrainer, Evaluator
from lightning_asyncfl.delays import DelayModel
from lightning_asyncfl.executors import SequentialExecutor
from lightning_asyncfl.loop import AsyncFLLoop
from lightning_asyncfl.models import MLP
from lightning_asyncfl.schedulers.base import Scheduler
from lightning_asyncfl.state import Layout, ModelState


def flat_state(values: Sequence[float]) -> ModelState:
    """A one-tensor ModelState holding ``values`` (float32)."""
    flat = torch.tensor(values, dtype=torch.float32)
    return ModelState(flat, Layout.from_tensors({"w": flat}, num_parameters=1))


class ScriptedDelay(DelayModel):
    """Job k (in dispatch order) takes ``durations[k]`` virtual seconds, later jobs ``rest``."""

    def __init__(self, durations: Sequence[float], rest: float = 1.0) -> None:
        super().__init__()
        self.durations, self.rest = list(durations), rest
        self.calls = 0

    def _latency(self, client_id: int, rng: np.random.Generator) -> float:
        value = self.durations[self.calls] if self.calls < len(self.durations) else self.rest
        self.calls += 1
        return value


class FirstIdle(Scheduler):
    """Keeps ``concurrency`` clients in flight, always the lowest idle ids (no randomness)."""

    def __init__(self, concurrency: int) -> None:
        super().__init__()
        self.concurrency = concurrency

    def _select(self, now: float, idle: list[int], in_flight: list[int], version: int, rng: Any) -> list[int]:
        return idle[: max(0, self.concurrency - len(in_flight))]


class Recorder(Callback):
    """Records every arrival as (job, client, arrival time, staleness, status)."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[int, int, float, int, str]] = []
        self.versions: list[int] = []

    def on_update_received(self, loop: Any, update: Any) -> None:
        self.arrivals.append((update.job_id, update.client_id, update.arrival_time, update.staleness, "accepted"))

    def on_update_rejected(self, loop: Any, job: Any, reason: str, detail: str, update: Any) -> None:
        self.arrivals.append((job.job_id, job.client_id, job.arrival_time, loop.version - job.base_version, reason))

    def on_aggregate(self, loop: Any, updates: Any, version: int) -> None:
        self.versions.append(version)


def toy_data(num_clients: int = 3, per_client: int = 12, features: int = 4, seed: int = 0) -> tuple[TensorDataset, TensorDataset, list[torch.Tensor]]:
    """A linearly separable 3-class problem split into equal contiguous clients, plus a test set."""
    g = torch.Generator().manual_seed(seed)
    n = num_clients * per_client
    x = torch.randn(n + 30, features, generator=g)
    w = torch.randn(features, 3, generator=g)
    y = (x @ w).argmax(dim=1)
    train = TensorDataset(x[:n], y[:n])
    test = TensorDataset(x[n:], y[n:])
    indices = [torch.arange(k * per_client, (k + 1) * per_client) for k in range(num_clients)]
    return train, test, indices


def toy_model(features: int = 4, seed: int = 0, **kwargs: Any) -> MLP:
    torch.manual_seed(seed)
    return MLP(input_shape=[features], num_classes=3, hidden=kwargs.pop("hidden", [8]), lr=kwargs.pop("lr", 0.1), **kwargs)


def make_loop(aggregator: Any, scheduler: Scheduler, delay: DelayModel, *, num_clients: int = 3, per_client: int = 12,
              batch_size: int = 4, train: TensorDataset | None = None, module: Any = None, callbacks: Sequence[Callback] = (),
              **loop_kwargs: Any) -> AsyncFLLoop:
    """An AsyncFLLoop over toy data with a sequential executor and a real Fabric trainer."""
    toy_train, test, indices = toy_data(num_clients, per_client)
    train = train if train is not None else toy_train
    template = module if module is not None else toy_model()
    evaluator = Evaluator(_copy(template), test)
    loop_kwargs.setdefault("max_steps", 6)
    return AsyncFLLoop(
        initial_state=ModelState.from_module(template),
        aggregator=aggregator,
        scheduler=scheduler,
        delay=delay,
        executor=SequentialExecutor(num_threads=1),
        make_trainer=lambda: ClientTrainer(_copy(template), train, indices, epochs=1, batch_size=batch_size),
        num_samples=[len(i) for i in indices],
        evaluate=evaluator.evaluate,
        callbacks=callbacks,
        **loop_kwargs,
    )


def _copy(module: Any) -> Any:
    import copy

    return copy.deepcopy(module)


def children_left() -> list:
    """This process's live multiprocessing children but the zygote, which lives as long as the process (executors/zygote.py)."""
    import multiprocessing

    return [p for p in multiprocessing.active_children() if p.name != "asyncfl-zygote"]


def parent_pid(pid: int) -> int:
    """The parent of process ``pid`` (``/proc/PID/stat``)."""
    stat = open(f"/proc/{pid}/stat").read()
    return int(stat[stat.rindex(")") + 2 :].split()[1])
