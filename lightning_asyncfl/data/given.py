"""A partition you already have: one index list per client, in Python or in a file.

``Given(index_lists=[[0, 5, 9], [1, 2], ...])`` or ``Given(file="clients.json")``: client
k trains on the training samples ``index_lists[k]``, exactly, with no randomness. The
indices point into the data module's whole training set (the rows of ``x`` for
:class:`~lightning_asyncfl.data.TensorFederatedData`); with a validation split
(``eval.val_fraction > 0``) the held-out samples are removed from the clients' lists, as
with every partition (no client trains on a validation sample): set ``eval.val_fraction=0``
to train on the lists exactly as given.

Files are read as data, never as code:

- ``.json``: a list of lists of integers (client 0 first), or an object
  ``{"0": [...], "1": [...]}`` keyed by client ids 0..K-1;
- ``.npy``: a 2-D integer array, one row per client (equal sizes), read with
  ``allow_pickle=False``;
- ``.npz``: one 1-D integer array per client, in the file's order, ``allow_pickle=False``;
- ``.pt`` / ``.pth``: a list of 1-D integer tensors or a 2-D integer tensor, read with
  ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_asyncfl.data.partition import Partition
from lightning_asyncfl.errors import InvalidValue

__all__ = ["Given", "read_index_lists"]

FORMATS = "a .json list of lists, a .npy 2-D integer array, a .npz of 1-D integer arrays, or a .pt list of 1-D integer tensors"


def _as_array(key: str, value: Any) -> np.ndarray:
    """One client's index list as int64, or :class:`InvalidValue` naming ``key``."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, (str, bytes)) or not isinstance(value, (Iterable, np.ndarray)):
        raise InvalidValue(key, value, "a list of sample indices (integers)")
    array = np.asarray(list(value) if not isinstance(value, np.ndarray) else value)
    if array.size == 0:
        raise InvalidValue(key, [], "a non-empty list of sample indices (every client needs a training sample)")
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        if array.ndim == 1 and np.issubdtype(array.dtype, np.floating) and np.all(np.mod(array, 1) == 0):
            return array.astype(np.int64)
        shown = array.tolist()[:5] if array.ndim == 1 else f"an array of shape {list(array.shape)}"
        raise InvalidValue(key, shown, "a flat list of integer sample indices")
    return array.astype(np.int64, copy=False)


def read_index_lists(path: str | Path, key: str = "file") -> list[np.ndarray]:
    """The index lists of a file (see the module docstring), read without running code.

    Raises:
        InvalidValue: the file is missing, of another format, or holds something else.
    """
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise InvalidValue(key, str(path), f"an existing file: {FORMATS}")
    suffix = p.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(p.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                ids = sorted(data, key=lambda k: int(k) if str(k).isdigit() else -1)
                if [str(k) for k in ids] != [str(i) for i in range(len(ids))]:
                    raise InvalidValue(key, str(path), f"a JSON object keyed by the client ids 0..{len(ids) - 1}, got keys {sorted(data)[:5]}")
                data = [data[k] for k in ids]
        elif suffix == ".npy":
            data = np.load(p, allow_pickle=False)
            if data.ndim != 2:
                raise InvalidValue(key, str(path), f"a 2-D integer array in a .npy file (one row per client), got shape {list(data.shape)}; unequal lists go in .npz or .json")
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as archive:
                data = [archive[name] for name in archive.files]
        elif suffix in (".pt", ".pth"):
            data = torch.load(p, map_location="cpu", weights_only=True)
        else:
            raise InvalidValue(key, str(path), FORMATS)
    except InvalidValue:
        raise
    except Exception as error:  # a damaged file, a pickle that names code (refused by weights_only)
        raise InvalidValue(key, str(path), f"{FORMATS} ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None
    if isinstance(data, (np.ndarray, torch.Tensor)) and data.ndim == 2:
        data = list(data)
    if not isinstance(data, (list, tuple)) or not data:
        raise InvalidValue(key, str(path), f"a non-empty list of index lists: {FORMATS}")
    return [_as_array(f"{key}[{k}]", part) for k, part in enumerate(data)]


class Given(Partition):
    """Client k gets exactly ``index_lists[k]`` (``partition=given``); set exactly one source.

    Args:
        index_lists: one list of training-sample indices per client (lists, NumPy arrays or
            tensors of integers), client 0 first.
        file: a file holding the same (see the module docstring for the formats).
        client_test_fraction: see :class:`Partition`.

    Raises:
        InvalidValue: both or neither source, an empty or non-integer list, or (when the
            data is split) an index out of range, a sample in two lists, or not one list per
            client; each message names the key, the value and what is allowed.
    """

    def __init__(self, *, index_lists: Sequence[Any] | None = None, file: str | None = None, client_test_fraction: float = 0.0) -> None:
        super().__init__(client_test_fraction=client_test_fraction)
        if (index_lists is None) == (file in (None, "")):
            raise InvalidValue("index_lists", "both set" if index_lists is not None else None,
                               "set exactly one of partition.index_lists (a list of lists) and partition.file (a path)")  # fmt: skip
        self.file = None if file in (None, "") else str(file)
        if self.file is not None:
            self.index_lists = read_index_lists(self.file)
        else:
            if isinstance(index_lists, (str, bytes, dict)) or not isinstance(index_lists, (Sequence, np.ndarray, torch.Tensor)) or len(index_lists) == 0:
                raise InvalidValue("index_lists", index_lists, "a non-empty list of lists of sample indices, one per client")
            self.index_lists = [_as_array(f"index_lists[{k}]", part) for k, part in enumerate(index_lists)]

    @property
    def num_clients(self) -> int:
        """How many clients the lists describe."""
        return len(self.index_lists)

    #: the indices point into the whole training set, also with a validation split (see the module docstring)
    indexes_training_set = True

    def _split(self, targets, num_clients, rng, groups):
        key = "file" if self.file is not None else "index_lists"
        n = len(targets)
        if len(self.index_lists) != num_clients:
            raise InvalidValue(key, f"{len(self.index_lists)} index lists", f"one index list per client: data.num_clients is {num_clients} (or null to take the lists' count)")
        owner = np.full(n, -1, dtype=np.int64)
        for k, part in enumerate(self.index_lists):
            bad = part[(part < 0) | (part >= n)]
            if bad.size:
                raise InvalidValue(f"{key}[{k}]", f"index {int(bad[0])}", f"indices in [0, {n}): the {n} samples of the training set")
            values, counts = np.unique(part, return_counts=True)
            if (counts > 1).any():
                raise InvalidValue(f"{key}[{k}]", f"index {int(values[counts > 1][0])} listed twice", "each sample at most once per client")
            taken = owner[part]
            if (taken >= 0).any():
                i = int(np.flatnonzero(taken >= 0)[0])
                raise InvalidValue(f"{key}[{k}]", f"index {int(part[i])}, already in client {int(taken[i])}'s list",
                                   "disjoint lists: each sample belongs to at most one client")  # fmt: skip
            owner[part] = k
        return [part.copy() for part in self.index_lists]

    def __repr__(self) -> str:
        source = f"file={self.file!r}" if self.file is not None else f"index_lists=<{len(self.index_lists)} lists>"
        extra = f", client_test_fraction={self.client_test_fraction}" if self.client_test_fraction else ""
        return f"Given({source}{extra})"
