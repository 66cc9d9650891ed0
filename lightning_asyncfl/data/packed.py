"""Every client's index list packed into two tensors (:class:`PackedIndices`).

Torch only (no Lightning), so the data modules can pack their index lists without
importing the client trainer; :mod:`lightning_asyncfl.client` exports it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["PackedIndices"]


class PackedIndices(Sequence[Tensor]):
    """Every client's index list as a slice of one flat tensor.

    With 100,000 clients a list of tensors is 100,000 Python objects to build, copy to a
    device, pickle to a worker process (one shared-memory handle each) or put in Ray's
    object store; packed, it is two tensors, and ``packed[k]`` is a view, made when asked.
    """

    def __init__(self, flat: Tensor, offsets: Tensor) -> None:
        self.flat, self.offsets = flat, offsets
        self._bounds: list[int] | None = None

    @classmethod
    def of(cls, lists: Sequence[Tensor]) -> PackedIndices:
        """``lists`` packed (returned as is if already packed)."""
        if isinstance(lists, PackedIndices):
            return lists
        sizes = torch.tensor([len(t) for t in lists], dtype=torch.long)
        offsets = torch.zeros(len(lists) + 1, dtype=torch.long)
        torch.cumsum(sizes, 0, out=offsets[1:])
        flat = torch.cat([torch.as_tensor(t, dtype=torch.long).reshape(-1) for t in lists]) if lists else torch.zeros(0, dtype=torch.long)
        return cls(flat, offsets)

    def to(self, device: torch.device | str) -> PackedIndices:
        """The same lists with the flat tensor on ``device``."""
        return PackedIndices(self.flat.to(device), self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, k: int) -> Tensor:  # type: ignore[override]
        if self._bounds is None:
            self._bounds = self.offsets.tolist()
        return self.flat[self._bounds[k] : self._bounds[k + 1]]

    def __getstate__(self) -> dict[str, Any]:
        return {"flat": self.flat, "offsets": self.offsets, "_bounds": None}
