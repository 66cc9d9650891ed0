"""What every plug-in learns about the run it serves, once, before training.

The owner of a run builds one :class:`SetupContext` and calls ``setup(context)`` on each
plug-in (aggregator, scheduler, delay, system model, attack, availability, client
algorithm) exactly once, before the first dispatch and before a checkpoint is loaded
(:func:`lightning_asyncfl.plugins.setup_plugins` is that one place). The context is
read-only: a plug-in copies what it needs (``context.num_clients``), never keeps the
context to change it.

The random streams it hands out are the run's own: :meth:`SetupContext.stream` gives the
same generator for a key every time it is asked on one context, so draws made at setup
(the delay model's per-client speeds) and the loop's later draws from that stream (each
job's duration) follow one another, as one stream.

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
from lightning_asyncfl.errors import require
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
    _streams: dict[int, np.random.Generator] = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

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
        """The run's named random stream ``key`` (a constant of :mod:`lightning_asyncfl.seeding`).

        The same generator for ``key`` on every call on this context: whoever draws next
        continues the stream (the loop's job durations follow the delay model's setup draws).
        """
        if key not in self._streams:
            self._streams[key] = seeding.stream(self.seed, key)
        return self._streams[key]


def clients_of_run(key: str, given: int | None, context: SetupContext) -> int:
    """The run's number of clients for a plug-in's ``key`` (``num_clients``): ``given`` if it
    matches the run, the run's when ``given`` is None; :class:`InvalidValue` otherwise."""
    if given is None:
        return context.num_clients
    require(given == context.num_clients, key, given, f"null or the run's number of clients ({context.num_clients})")
    return int(given)
