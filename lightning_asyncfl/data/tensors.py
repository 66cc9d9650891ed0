"""Data you already hold: training and test tensors in memory, or in one file (``data=tensors``).

``TensorFederatedData(x, y, x_test, y_test)`` shares ``(x, y)`` among the clients (the
partition, e.g. given index lists, points into its rows) and evaluates on ``(x_test,
y_test)``. The validation split (``eval.val_fraction``) is held out of ``(x, y)`` per
class, as with every data module. Arrays may be tensors, NumPy arrays or nested lists:
floating features become float32, integer features (token ids) int64, labels int64.

From the command line the same tensors come from one file, read as data, never as code:
a ``.pt`` file of a dict ``{"x": ..., "y": ..., "x_test": ..., "y_test": ...}`` of
tensors (``torch.load(weights_only=True)``) or a ``.npz`` with those four arrays
(``allow_pickle=False``)::

    torch.save({"x": x, "y": y, "x_test": x_test, "y_test": y_test}, "data.pt")
    python -m lightning_asyncfl data=tensors data.file=data.pt data.input_shape=[1,28,28] data.num_classes=10
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from lightning_asyncfl.data.datamodule import FederatedDataModule
from lightning_asyncfl.data.partition import Partition
from lightning_asyncfl.errors import InvalidValue, checking

__all__ = ["TensorFederatedData", "read_tensors"]

KEYS = ("x", "y", "x_test", "y_test")


def read_tensors(path: str | Path, key: str = "file") -> dict[str, torch.Tensor]:
    """``{"x", "y", "x_test", "y_test"}`` from a ``.pt`` (``weights_only=True``) or ``.npz`` (``allow_pickle=False``) file.

    Raises:
        InvalidValue: the file is missing, of another format, or lacks one of the four arrays.
    """
    p = Path(str(path)).expanduser()
    allowed = "an existing .pt file of a dict of tensors x, y, x_test, y_test (torch.save), or a .npz with those arrays"
    if not p.is_file():
        raise InvalidValue(key, str(path), allowed)
    try:
        if p.suffix.lower() == ".npz":
            with np.load(p, allow_pickle=False) as archive:
                data: Any = {name: torch.from_numpy(archive[name]) for name in archive.files}
        elif p.suffix.lower() in (".pt", ".pth"):
            data = torch.load(p, map_location="cpu", weights_only=True)
        else:
            raise InvalidValue(key, str(path), allowed)
    except InvalidValue:
        raise
    except Exception as error:  # a damaged file, or a pickle that names code (refused by weights_only)
        raise InvalidValue(key, str(path), f"{allowed} ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None
    missing = [k for k in KEYS if not isinstance(data, dict) or k not in data]
    if missing:
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise InvalidValue(key, str(path), f"{allowed}; it lacks {', '.join(missing)} (found {found})")
    return {k: data[k] for k in KEYS}


def _tensor(key: str, value: Any) -> torch.Tensor:
    try:
        t = value.detach().cpu() if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as error:
        raise InvalidValue(key, type(value).__name__, f"a tensor, NumPy array or nested list of numbers ({error})") from None
    if t.dtype == torch.bool or t.is_complex():
        raise InvalidValue(key, str(t.dtype), "real numbers")
    return t


class TensorFederatedData(FederatedDataModule):
    """Training and test tensors given as they are; the partition splits the training rows.

    Args:
        x: training features, shape ``(n, *input_shape)``.
        y: training labels, shape ``(n,)``, integers in ``[0, num_classes)``.
        x_test: test features, shape ``(m, *input_shape)``.
        y_test: test labels, shape ``(m,)``.
        file: instead of the four arrays: a ``.pt`` or ``.npz`` file holding them (see the module docstring).
        num_clients: how many clients; null: as many as the partition's index lists
            (``partition=given``), else required.
        input_shape: the shape of one sample; null: ``x.shape[1:]``.
        num_classes: the number of classes; null: the largest label + 1.
        partition: how to split the training rows; the run gives its own.
        seed: the run's seed; the run gives its own.
    """

    _repr_fields = ("file",)

    def __init__(
        self,
        x: Any = None,
        y: Any = None,
        x_test: Any = None,
        y_test: Any = None,
        *,
        file: str | None = None,
        num_clients: int | None = None,
        input_shape: Sequence[int] | None = None,
        num_classes: int | None = None,
        partition: Partition | None = None,
        seed: int = 0,
    ) -> None:
        arrays = {"x": x, "y": y, "x_test": x_test, "y_test": y_test}
        given = [k for k, v in arrays.items() if v is not None]
        if file not in (None, ""):
            if given:
                raise InvalidValue("file", str(file), f"null when the tensors are given ({', '.join(given)} given too)")
            arrays = dict(read_tensors(str(file)))
        elif len(given) != 4:
            raise InvalidValue("x", "missing " + ", ".join(k for k in KEYS if k not in given), "all four of x, y, x_test, y_test given (or file=PATH)")
        tensors = {k: _tensor(k, v) for k, v in arrays.items()}
        with checking() as check:
            for features, labels in (("x", "y"), ("x_test", "y_test")):
                fx, ly = tensors[features], tensors[labels]
                check(fx.ndim >= 2, features, list(fx.shape), "a shape (samples, *input_shape)")
                check(ly.ndim == 1 and not ly.is_floating_point(), labels, f"{ly.dtype} of shape {list(ly.shape)}", "integer labels of shape (samples,)")
                check(ly.ndim != 1 or fx.ndim < 1 or len(ly) == len(fx), labels, f"{len(ly)} labels", f"one label per row of {features} ({len(fx)})")
            check(len(tensors["x"]) >= 1 and len(tensors["x_test"]) >= 1, "x", list(tensors["x"].shape), "at least one training and one test sample")
        self.file = None if file in (None, "") else str(file)
        features_dtype = torch.float32 if tensors["x"].is_floating_point() else torch.int64
        self._train = TensorDataset(tensors["x"].to(features_dtype).contiguous(), tensors["y"].to(torch.int64).contiguous())
        self._test = TensorDataset(tensors["x_test"].to(features_dtype).contiguous(), tensors["y_test"].to(torch.int64).contiguous())
        if num_classes is None:
            num_classes = int(max(int(tensors["y"].max()), int(tensors["y_test"].max()))) + 1
        self.clients_from_partition = num_clients is None
        super().__init__(
            num_clients=1 if num_clients is None else num_clients, input_shape=tuple(tensors["x"].shape[1:]) if input_shape is None else input_shape,
            num_classes=num_classes, partition=partition, seed=seed,
        )  # fmt: skip
        if self.clients_from_partition:
            self.num_clients = getattr(self.partition, "num_clients", None)

    def setup(self, stage: str | None = None) -> None:
        if self.clients_from_partition:
            self.num_clients = getattr(self.partition, "num_clients", None)
            if self.num_clients is None:
                raise InvalidValue("num_clients", None, f"an integer >= 1 (null only with given index lists, which set it; the partition is {self.partition!r})")
        super().setup(stage)

    def load(self) -> tuple[Dataset, Dataset, None]:
        """The given training and test tensors; no natural groups."""
        return self._train, self._test, None

    def fingerprint(self) -> str:
        """A SHA-256 of the four tensors' dtypes, shapes and bytes (what a resumed run checks)."""
        import hashlib

        digest = hashlib.sha256()
        for dataset in (self._train, self._test):
            for t in dataset.tensors:
                digest.update(f"{t.dtype}{list(t.shape)}".encode())
                digest.update(t.numpy().tobytes())
        return digest.hexdigest()
