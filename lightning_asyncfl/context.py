"""What every plug-in learns about the run it serves, once, before training.

The owner of a run builds one :class:`SetupContext` and calls ``setup(context)`` on each
plug-in (aggregator, scheduler, delay, system model, attack, availability, client
algorithm) exactly once, before the first dispatch and before a checkpoint is loaded. The
context is read-only: a plug-in copies what it needs (``context.num_clients``), never
keeps the context to change it.

Example::

    class MyAggregator(AsyncAggregator):
        def setup(self, context: SetupContext) -> None:
            self.cache = torch.zeros(context.num_clients, context.layout.size)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from lightning_asyncfl import seeding
from lightning_asyncfl.state import Layout


@dataclasses.dataclass(frozen=True)
class SetupContext:
    """The run as a plug-in sees it before training.

    Args:
        num_samples: training samples of each client; its length is the number of clients.
        seed: the run's seed (use :meth:`stream`, not the seed, to draw).
        layout: the model's flat layout (names, shapes, dtypes of its parameters), or
            ``None`` where the model is not known (a config check without a model).
        device: the device the server holds the global model on.
    """

    num_samples: tuple[int, ...]
    seed: int
    layout: Layout | None = None
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_samples", tuple(int(n) for n in self.num_samples))

    @classmethod
    def of(cls, num_samples: Sequence[int], seed: int, layout: Layout | None = None, device: torch.device | str = "cpu") -> SetupContext:
        """A context from plain values (``device`` may be a string)."""
        return cls(tuple(num_samples), int(seed), layout, torch.device(device))

    @property
    def num_clients(self) -> int:
        """Number of clients."""
        return len(self.num_samples)

    def stream(self, key: int) -> np.random.Generator:
        """The run's named random stream ``key`` (a constant of :mod:`lightning_asyncfl.seeding`)."""
        return seeding.stream(self.seed, key)
