"""AsyncAggregator: the server's rule for folding client updates into the global model."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

from lightning_asyncfl.context import SetupContext
from lightning_asyncfl.aggregators.robust import unused_robust_keys
from lightning_asyncfl.aggregators.staleness import Staleness, unused_staleness_keys
from lightning_asyncfl.buffer import UpdateBuffer
from lightning_asyncfl.errors import positive_int
from lightning_asyncfl.state import ClientUpdate, ModelState


class AsyncAggregator(abc.ABC):
    """Base class of every aggregation rule.

    The loop pushes accepted updates into an :class:`UpdateBuffer`; whenever
    :meth:`ready` holds it drains the buffer into :meth:`aggregate` and installs the
    returned state as the next global version. A subclass writes :meth:`aggregate` and,
    when it keeps server-side state (momentum, caches), :meth:`state_dict` and
    :meth:`load_state_dict`.

    ``aggregate`` must not modify ``global_state`` or the updates in place: the loop keeps
    older versions by reference for the jobs still training from them.

    Args:
        buffer_size: aggregate when this many updates are buffered.
    """

    def __init__(self, *, buffer_size: int = 1) -> None:
        positive_int("buffer_size", buffer_size)
        self.buffer_size = buffer_size

    def setup(self, context: SetupContext) -> None:
        """Learn the run (number of clients, their samples, the model layout, the device) once before training (default: nothing)."""

    def ready(self, buffer: UpdateBuffer) -> bool:
        """Whether to aggregate now; default: the buffer holds ``buffer_size`` updates."""
        return len(buffer) >= self.buffer_size

    @abc.abstractmethod
    def aggregate(self, global_state: ModelState, updates: Sequence[ClientUpdate], version: int) -> ModelState:
        """The next global model from the current one (``version``) and the buffered updates."""

    def unused_keys(self) -> dict[str, str]:
        """Constructor keys that have no effect with this instance's other settings, each with why.

        The default covers the shared keys: the staleness function's ``a``/``b`` (an
        attribute ``staleness``) and the deprecated robust keys ``trim``/``krum_f``/``krum_m``
        (an attribute ``legacy_rule``; a ``reducer`` holds only the options it uses). A run
        warns about a key listed here that was set.
        """
        unused: dict[str, str] = {}
        if isinstance(getattr(self, "staleness", None), Staleness):
            unused.update(unused_staleness_keys(self.staleness))
        if isinstance(getattr(self, "legacy_rule", None), str):
            unused.update(unused_robust_keys(self.legacy_rule))
        return unused

    def state_dict(self) -> dict[str, Any]:
        """Server-side state to checkpoint (tensors and plain values only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(buffer_size={self.buffer_size})"
