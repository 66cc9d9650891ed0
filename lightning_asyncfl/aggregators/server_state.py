"""FlatState: server tensors shaped like the global model's flat vector, checkpointed.

Server optimizers (FedOpt's m and v, FADAS's m, v, v̂) and CA²FL's caches keep named
vectors of the model's flat size. They share the same plumbing, written once here:

- created lazily at the first aggregation, by the aggregator's ``init(flat)``, so they take
  the global model's shape, dtype and device without being told them beforehand;
- moved to the global vector's device and dtype at every use (a checkpoint loads on the CPU);
- checked: the keys on load (a fixed set, or a rule for open sets such as one cache per
  client), every tensor one-dimensional and all of one length on load, and that length
  equal to the model's at the first use;
- ``state_dict`` hands out the tensors (``{}`` before the first aggregation) and
  ``load_state_dict`` takes copies.

The aggregator replaces the whole dict after each step (:meth:`FlatState.set`) with new
tensors, never modifying the old ones in place, since ``state_dict`` hands out references.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor


class FlatState:
    """Named flat vectors of one aggregator.

    Args:
        owner: the aggregator's name, used in messages.
        keys: the fixed key set (``None``: an open set, checked by ``key_rule``).
        key_rule: for an open set, whether a key is allowed.
        key_hint: for an open set, the allowed keys in words (``"'h' and 'cache.<client id>'"``).
    """

    def __init__(self, owner: str, keys: Iterable[str] | None = None, *, key_rule: Callable[[str], bool] | None = None,
                 key_hint: str = "") -> None:
        self.owner = owner
        self.keys = None if keys is None else tuple(keys)
        self._key_rule = key_rule
        self._key_hint = key_hint
        self._tensors: dict[str, Tensor] = {}

    def __bool__(self) -> bool:
        return bool(self._tensors)

    def get(self, like: Tensor, init: Callable[[Tensor], dict[str, Tensor]]) -> dict[str, Tensor]:
        """The tensors on ``like``'s device and dtype; ``init(like)`` makes them at the first use.

        Raises:
            ValueError: a loaded tensor's shape differs from ``like``'s.
        """
        if not self._tensors:
            return init(like)
        tensors = {key: tensor.to(like) for key, tensor in self._tensors.items()}
        bad = {key: tuple(t.shape) for key, t in tensors.items() if t.shape != like.shape}
        if bad:
            raise ValueError(f"{self.owner} state {bad} does not fit the model's flat vector of shape {tuple(like.shape)}")
        return tensors

    def set(self, tensors: dict[str, Tensor]) -> None:
        """Hold ``tensors`` (new ones, made by the step) as the state."""
        self._tensors = dict(tensors)

    def state_dict(self) -> dict[str, Tensor]:
        """The tensors by name (``{}`` before the first aggregation)."""
        return dict(self._tensors)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take copies of ``state``'s tensors after checking their keys and shapes.

        Raises:
            ValueError: a key outside the allowed ones, a missing key of a fixed set, or
                tensors that are not flat vectors of one length.
        """
        if state and self.keys is not None and set(state) != set(self.keys):
            raise ValueError(f"{self.owner} state needs keys {sorted(self.keys)}, got {sorted(state)}")
        if self.keys is None and self._key_rule is not None:
            for key in state:
                if not self._key_rule(key):
                    raise ValueError(f"{self.owner} state keys are {self._key_hint}, got {key!r}")
        tensors = {key: torch.as_tensor(value).clone() for key, value in state.items()}
        shapes = {key: tuple(t.shape) for key, t in tensors.items()}
        if any(len(shape) != 1 for shape in shapes.values()) or len(set(shapes.values())) > 1:
            raise ValueError(f"{self.owner} state must hold flat vectors of one length, got shapes {shapes}")
        self._tensors = tensors
