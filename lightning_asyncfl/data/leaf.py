"""LEAF's naturally partitioned benchmarks, read from LEAF's own preprocessed JSON files.

Caldas, Duddu, Wu, Li, Konečný, McMahan, Smith, Talwalkar. "LEAF: A Benchmark for
Federated Settings", 2018, https://arxiv.org/abs/1812.01097, https://github.com/TalwalkarLab/leaf.

LEAF's ``preprocess.sh`` writes ``<root>/train/*.json`` and ``<root>/test/*.json``, each
file ``{"users": [...], "num_samples": [...], "user_data": {user: {"x": [...], "y": [...]}}}``.
Every user (a FEMNIST writer, a Shakespeare speaking role) is one client; with LEAF's
``-t sample`` split, each user's test file rows are that user's own held-out data.

- :class:`FEMNIST`: 62 classes (digits, upper and lower case letters); ``x`` is 784 floats
  (a 28×28 image, row by row), read as a ``(1, 28, 28)`` image.
- :class:`Shakespeare`: next-character prediction; ``x`` is a string of 80 characters and
  ``y`` the character that follows, both mapped to indices in LEAF's 80-symbol
  vocabulary (:data:`ALL_LETTERS`, from LEAF's ``models/utils/language_utils.py``).

The training set is every sampled user's training data, in the users' order; client k is
the k-th sampled user (``partition=natural``, the default of these datasets). The test
set is the sampled users' test data, and ``client_test_indices[k]`` are user k's rows in
it (LEAF's per-user test split). If the test files share no user with the sampled
training users (LEAF's ``-t user`` split: held-out users), the test set is every test
user's data and there are no per-client test indices.
"""

from __future__ import annotations

import abc

import json
import logging
import os
from collections.abc import Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import TensorDataset

from lightning_asyncfl import seeding
from lightning_asyncfl.data.datamodule import FederatedDataModule, tensor_dataset
from lightning_asyncfl.data.partition import Partition
from lightning_asyncfl.errors import ConfigError, checking

log = logging.getLogger(__name__)

#: LEAF's Shakespeare vocabulary (``models/utils/language_utils.py``), 80 symbols; index = position
ALL_LETTERS = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
#: the sequence length of LEAF's Shakespeare task
SEQ_LEN = 80
_LETTER_INDEX = {c: i for i, c in enumerate(ALL_LETTERS)}
_UNKNOWN = _LETTER_INDEX[" "]  # a character outside the vocabulary reads as a space (counted and logged)
_USER_SAMPLING = 3  # the partition sub-stream that samples users


def read_leaf_split(directory: Path) -> tuple[list[str], dict[str, dict[str, list[Any]]]]:
    """Every user of the ``*.json`` files in ``directory``, in file-name then file order.

    Returns:
        ``(users, user_data)`` with ``user_data[user] = {"x": [...], "y": [...]}``.

    Raises:
        ValueError: a file is not LEAF's format, or a user appears in two files.
    """
    users: list[str] = []
    data: dict[str, dict[str, list[Any]]] = {}
    for path in sorted(directory.glob("*.json")):
        with path.open() as f:
            content = json.load(f)
        if not isinstance(content, dict) or not {"users", "user_data"} <= content.keys():
            raise ValueError(f"{path} is not a LEAF data file (it needs the keys 'users' and 'user_data')")
        for user in content["users"]:
            if user in data:
                raise ValueError(f"user {user!r} appears twice in {directory} (again in {path.name})")
            record = content["user_data"].get(user)
            if not isinstance(record, dict) or "x" not in record or "y" not in record:
                raise ValueError(f"{path}: user_data[{user!r}] must hold 'x' and 'y'")
            if len(record["x"]) != len(record["y"]):
                raise ValueError(f"{path}: user {user!r} has {len(record['x'])} x but {len(record['y'])} y")
            users.append(user)
            data[user] = record
    return users, data


class LEAFDataModule(FederatedDataModule):
    """A LEAF dataset: one client per user, LEAF's own train/test split per user.

    Subclasses set :attr:`name` and :attr:`preprocess` and write :meth:`_arrays`.

    Args:
        root: the directory holding LEAF's ``train/`` and ``test/`` folders (LEAF writes
            them to ``leaf/data/<dataset>/data``); relative to the current working
            directory.
        num_clients: how many users to sample (each one client); ``None``: a
            ``user_fraction`` of them (all by default).
        user_fraction: the share of the users sampled when ``num_clients`` is ``None``, in
            (0, 1]; ``max(1, round(user_fraction * users))`` users, drawn without
            replacement from the run's partition stream.
        input_shape: must be the dataset's sample shape.
        num_classes: the number of classes.
        partition: how to split the training set; ``natural`` (one client per user) is the
            default of the config.
        seed: the run's seed.
    """

    name: ClassVar[str] = ""
    preprocess: ClassVar[str] = ""  # LEAF's command that writes the files
    default_input_shape: ClassVar[tuple[int, ...]] = ()
    default_num_classes: ClassVar[int] = 0
    feature_dtype: ClassVar[torch.dtype] = torch.float32
    _repr_fields: tuple[str, ...] = ("root", "user_fraction")

    def __init__(
        self,
        *,
        root: str | os.PathLike = "data",
        num_clients: int | None = None,
        user_fraction: float = 1.0,
        input_shape: Sequence[int] | None = None,
        num_classes: int | None = None,
        partition: Partition | None = None,
        seed: int = 0,
    ) -> None:
        with checking() as check:
            check(isinstance(root, (str, os.PathLike)) and str(root) != "", "root", root, "a non-empty directory path")
            check(
                num_clients is None or (isinstance(num_clients, Integral) and not isinstance(num_clients, bool) and num_clients >= 1),
                "num_clients", num_clients, "null (every sampled user) or an integer >= 1",
            )  # fmt: skip
            check(
                isinstance(user_fraction, Real) and not isinstance(user_fraction, bool) and 0 < user_fraction <= 1,
                "user_fraction", user_fraction, "in (0, 1]",
            )  # fmt: skip
            if num_clients is not None and isinstance(user_fraction, Real):
                check(user_fraction == 1, "user_fraction", user_fraction, "1.0 when num_clients is set (set one of the two)")
        super().__init__(
            num_clients=1 if num_clients is None else num_clients,  # the real number is known once the users are read
            input_shape=self.default_input_shape if input_shape is None else input_shape,
            num_classes=self.default_num_classes if num_classes is None else num_classes,
            partition=partition,
            seed=seed,
        )
        self.root = os.path.abspath(os.path.expanduser(os.fspath(root)))
        self.requested_clients = num_clients
        self.user_fraction = float(user_fraction)
        self.users: list[str] = []  # the sampled users, client k = users[k]

    # --- what a subclass writes -------------------------------------------------------

    @abc.abstractmethod
    def _arrays(self, xs: list[Any], ys: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        """One user's ``x`` and ``y`` lists as (features, int64 labels)."""

    # --- the shared part ---------------------------------------------------------------

    def _missing(self) -> list[str]:
        return [os.path.join(self.root, part, "*.json") for part in ("train", "test") if not any(Path(self.root, part).glob("*.json"))]

    def _read(self) -> tuple[tuple[list[str], dict], tuple[list[str], dict]]:
        missing = self._missing()
        if missing:
            raise ConfigError(
                [
                    f"data.root: {self.name} files not found: expected LEAF's JSON files {' and '.join(missing)} "
                    f"(the train/ and test/ folders LEAF writes to leaf/data/{self.name.lower()}/data); produce them "
                    f"with LEAF (https://github.com/TalwalkarLab/leaf): cd leaf/data/{self.name.lower()} && "
                    f"{self.preprocess}, then set data.root to that data/ directory"
                ]
            )
        try:
            return read_leaf_split(Path(self.root, "train")), read_leaf_split(Path(self.root, "test"))
        except (OSError, ValueError) as error:
            raise ConfigError([f"data.root: {self.name} files in {self.root} are unreadable ({type(error).__name__}: {error})"]) from error

    def _sample_users(self, users: list[str]) -> list[str]:
        total = len(users)
        if not total:
            raise ConfigError([f"data.root: no {self.name} user in {self.root}/train has a training sample"])
        if self.requested_clients is not None:
            if self.requested_clients > total:
                raise ConfigError([f"data.num_clients must be <= the {total} users in {self.root}/train (or null: every user), got {self.requested_clients}"])
            count = self.requested_clients
        else:
            count = max(1, int(round(self.user_fraction * total)))
        if count == total:
            return list(users)
        chosen = seeding.stream(self.seed, seeding.PARTITION, _USER_SAMPLING).choice(total, size=count, replace=False)
        return [users[i] for i in np.sort(chosen)]

    def _pool(self, users: list[str], data: dict) -> tuple[np.ndarray, np.ndarray, list[int]]:
        xs, ys, sizes = [], [], []
        for user in users:
            x, y = self._arrays(data[user]["x"], data[user]["y"])
            xs.append(x)
            ys.append(y)
            sizes.append(len(y))
        shape = (0, *self.input_shape)
        x = np.concatenate(xs) if xs else np.zeros(shape)
        y = np.concatenate(ys) if ys else np.zeros(0, dtype=np.int64)
        return x, y, sizes

    def load(self) -> tuple[TensorDataset, TensorDataset, np.ndarray]:
        """Read the files, sample the users; groups = each training sample's client."""
        (train_users, train_data), (test_users, test_data) = self._read()
        eligible = [u for u in train_users if len(train_data[u]["y"])]  # a client needs a training sample
        if len(eligible) < len(train_users):
            log.info("%s: %d users without training samples left out", self.name, len(train_users) - len(eligible))
        users = self._sample_users(eligible)
        self.users = users
        self.num_clients = len(users)
        train_x, train_y, train_sizes = self._pool(users, train_data)
        per_user_test = any(user in test_data for user in users)
        test_order = [u for u in users if u in test_data] if per_user_test else test_users
        test_x, test_y, test_sizes = self._pool(test_order, test_data)
        train = tensor_dataset(train_x, train_y, dtype=self.feature_dtype)
        test = tensor_dataset(test_x, test_y, dtype=self.feature_dtype)
        if per_user_test:
            sizes = dict(zip(test_order, test_sizes))
            starts = np.cumsum([0, *test_sizes])
            offset = dict(zip(test_order, starts[:-1].tolist()))
            self.client_test_source = test
            self.client_test_indices = [
                torch.arange(offset[u], offset[u] + sizes[u], dtype=torch.int64) if u in sizes else torch.zeros(0, dtype=torch.int64)
                for u in users
            ]
        else:
            log.info("%s: the test files hold none of the sampled training users (a user split): the test set is every test user's data", self.name)
            self.client_test_source = None
            self.client_test_indices = None
        groups = np.repeat(np.arange(len(users), dtype=np.int64), train_sizes)
        return train, test, groups


class FEMNIST(LEAFDataModule):
    """LEAF's FEMNIST: handwritten digits and letters, 62 classes, one client per writer.

    ``x`` holds 784 floats (LEAF's 28×28 image, row by row, values as LEAF stores them),
    read as ``(1, 28, 28)``; ``y`` is the class in ``[0, 62)``.
    """

    name = "FEMNIST"
    preprocess = "./preprocess.sh -s niid --sf 0.05 -k 0 -t sample"
    default_input_shape = (1, 28, 28)
    default_num_classes = 62

    def _arrays(self, xs: list[Any], ys: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(xs, dtype=np.float32)
        if x.size and x.shape[1:] != (784,):
            raise ConfigError([f"data.root: FEMNIST x must be lists of 784 floats (28x28), got shape {list(x.shape[1:])}"])
        return x.reshape(-1, *self.default_input_shape), np.asarray(ys, dtype=np.int64)


def encode_text(texts: Sequence[str], length: int) -> tuple[np.ndarray, int]:
    """Strings of ``length`` characters as int64 indices into :data:`ALL_LETTERS`.

    Returns:
        ``(indices, unknown)``: shape ``(len(texts), length)``, and how many characters
        were outside the vocabulary (each read as a space).
    """
    out = np.empty((len(texts), length), dtype=np.int64)
    unknown = 0
    for i, text in enumerate(texts):
        if len(text) != length:
            raise ConfigError([f"data.root: Shakespeare x must be strings of {length} characters, got one of {len(text)}: {text[:20]!r}..."])
        for j, c in enumerate(text):
            index = _LETTER_INDEX.get(c)
            if index is None:
                unknown += 1
                index = _UNKNOWN
            out[i, j] = index
    return out, unknown


class Shakespeare(LEAFDataModule):
    """LEAF's Shakespeare: next-character prediction, one client per speaking role.

    ``x`` is a string of 80 characters, ``y`` the next character; both become indices into
    LEAF's 80-symbol vocabulary :data:`ALL_LETTERS` (features int64 ``(80,)``, labels in
    ``[0, 80)``). A character outside the vocabulary reads as a space; how many there were
    is logged.
    """

    name = "Shakespeare"
    preprocess = "./preprocess.sh -s niid --sf 0.2 -k 0 -t sample -tf 0.8"
    default_input_shape = (SEQ_LEN,)
    default_num_classes = len(ALL_LETTERS)
    feature_dtype = torch.int64

    def _arrays(self, xs: list[Any], ys: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        x, unknown_x = encode_text(xs, self.input_shape[0])
        y, unknown_y = encode_text(ys, 1)
        if unknown_x or unknown_y:
            log.warning("Shakespeare: %d characters outside LEAF's 80-symbol vocabulary read as spaces", unknown_x + unknown_y)
        return x, y[:, 0]
