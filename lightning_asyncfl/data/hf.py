"""HuggingFace: a Hugging Face ``datasets`` dataset, from a ``save_to_disk`` folder or the hub.

Lhoest et al. "Datasets: A Community Library for Natural Language Processing", EMNLP
2021 (demos), https://arxiv.org/abs/2109.02846, https://huggingface.co/docs/datasets.

``path`` is a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``
(read with ``datasets.load_from_disk``, no network), or else a hub name such as
``ylecun/mnist`` (``datasets.load_dataset(path, name)``, needs internet once; the hub's
cache serves later runs). ``split`` is the training split, ``test_split`` the test split;
a single ``Dataset``, or ``test_split: null``, holds out ``test_fraction`` of the
training split per class, from the run's partition stream.

Columns: ``label_column`` holds the class (integers, a ``ClassLabel``, or strings, which
are numbered in sorted order); ``feature_column`` the input, read according to ``kind``:

- ``image``: ``datasets.Image`` or nested lists/arrays, ``(H, W)``, ``(H, W, C)`` or
  ``(C, H, W)`` with ``input_shape`` saying which; integer pixels (0..255) are scaled
  to [0, 1], floats kept;
  ``normalize`` subtracts the training split's per-channel mean and divides by its std;
- ``text``: strings, lower-cased and split into words and punctuation; the
  ``vocab_size - 2`` most frequent training tokens are ids 2.., 1 is an unknown word and
  0 padding; each text keeps its first ``input_shape[0]`` tokens, left-padded with 0
  (int64 features for :class:`~lightning_asyncfl.models.CharLSTM` or
  :class:`~lightning_asyncfl.models.Transformer` with ``vocab_size`` set);
- ``features``: a vector of numbers per row;
- ``auto``: ``image`` for an ``Image`` column or rows of two or more dimensions, ``text``
  for strings, ``features`` otherwise.

``group_column`` (optional) names each row's natural owner (a writer, a speaker), so
``partition=natural`` gives one client per owner. ``partition=flwr`` hands the training
split to a Flower Datasets partitioner (:class:`~lightning_asyncfl.data.flwr.FlowerPartition`),
which may partition by any column.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from lightning_asyncfl import seeding
from lightning_asyncfl.data.datamodule import FederatedDataModule, stratified_split, tensor_dataset
from lightning_asyncfl.data.flwr import FlowerPartition
from lightning_asyncfl.data.partition import Partition
from lightning_asyncfl.errors import ConfigError, checking

KINDS = ("auto", "image", "text", "features")
PAD, UNKNOWN = 0, 1  # token ids of padding and of a word outside the vocabulary
INSTALL = 'pip install "lightning-asyncfl[hf]"'
_TOKEN = re.compile(r"\w+|[^\w\s]")


def require_datasets() -> Any:
    """Import ``datasets``, or a ConfigError naming the extra to install."""
    try:
        import datasets
    except ImportError as error:
        raise ConfigError([f"data=hf needs the Hugging Face datasets library, which is not installed: {INSTALL}"]) from error
    return datasets


def tokenize(text: str) -> list[str]:
    """Lower-cased words and punctuation marks."""
    return _TOKEN.findall(text.lower())


def build_vocabulary(texts: Sequence[str], vocab_size: int) -> dict[str, int]:
    """The ``vocab_size - 2`` most frequent tokens (ties: alphabetical) -> ids 2, 3, ..."""
    counts = Counter(token for text in texts for token in tokenize(text))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[: vocab_size - 2]
    return {token: i + 2 for i, (token, _) in enumerate(ranked)}


def encode_texts(texts: Sequence[str], vocabulary: dict[str, int], length: int) -> np.ndarray:
    """Token ids ``(len(texts), length)``: the first ``length`` tokens, left-padded with :data:`PAD`."""
    out = np.full((len(texts), length), PAD, dtype=np.int64)
    for i, text in enumerate(texts):
        ids = [vocabulary.get(token, UNKNOWN) for token in tokenize(text)][:length]
        if ids:
            out[i, length - len(ids) :] = ids
    return out


class HuggingFace(FederatedDataModule):
    """A Hugging Face dataset, converted once to tensors (see the module docstring).

    Args:
        num_clients: how many clients share the training split; >= 1.
        path: a ``save_to_disk`` folder (relative to the current working directory) or a
            hub dataset name.
        name: the hub configuration name, or ``None``.
        split: the training split.
        test_split: the test split, or ``None`` to hold out ``test_fraction`` of ``split``.
        test_fraction: the share of each class held out when there is no test split.
        feature_column: the input column.
        label_column: the class column.
        group_column: the natural owner of each row (for ``partition=natural``), or ``None``.
        kind: how to read ``feature_column``: ``auto``, ``image``, ``text`` or ``features``.
        vocab_size: text: token ids in ``[0, vocab_size)`` (0 padding, 1 unknown).
        normalize: images: subtract the training split's per-channel mean, divide by its std.
        input_shape: one sample's shape: ``[C, H, W]`` for images, ``[length]`` for text.
        num_classes: the number of classes.
        partition: how to split the training set; ``IID()`` when ``None``.
        seed: the run's seed.
    """

    _repr_fields = ("path", "split", "test_split", "feature_column", "label_column", "kind")

    def __init__(
        self,
        *,
        num_clients: int,
        path: str,
        name: str | None = None,
        split: str = "train",
        test_split: str | None = "test",
        test_fraction: float = 0.2,
        feature_column: str = "image",
        label_column: str = "label",
        group_column: str | None = None,
        kind: str = "auto",
        vocab_size: int = 10000,
        normalize: bool = True,
        input_shape: Sequence[int],
        num_classes: int,
        partition: Partition | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(num_clients=num_clients, input_shape=input_shape, num_classes=num_classes, partition=partition, seed=seed)
        with checking() as check:
            check(isinstance(path, str) and path != "", "path", path, "a save_to_disk folder or a hub dataset name")
            for key, value in (("split", split), ("feature_column", feature_column), ("label_column", label_column)):
                check(isinstance(value, str) and value != "", key, value, "a non-empty name")
            for key, value in (("name", name), ("test_split", test_split), ("group_column", group_column)):
                check(value is None or (isinstance(value, str) and value != ""), key, value, "null or a non-empty name")
            check(isinstance(test_fraction, Real) and 0 < test_fraction < 1, "test_fraction", test_fraction, "in (0, 1)")
            check(kind in KINDS, "kind", kind, "one of: " + ", ".join(KINDS))
            check(isinstance(vocab_size, Integral) and not isinstance(vocab_size, bool) and vocab_size >= 3, "vocab_size", vocab_size, "an integer >= 3 (0 padding, 1 unknown, at least one word)")
            check(isinstance(normalize, bool), "normalize", normalize, "true or false")
        require_datasets()
        local = os.path.abspath(os.path.expanduser(path))
        self.path = local if os.path.isdir(local) else path
        self.name, self.split, self.test_split, self.test_fraction = name, split, test_split, float(test_fraction)
        self.feature_column, self.label_column, self.group_column = feature_column, label_column, group_column
        self.kind, self.vocab_size, self.normalize = kind, int(vocab_size), normalize
        self.hf_train: Any = None  # the training split as a datasets.Dataset (what a Flower partitioner sees)
        self.label_names: list[str] | None = None
        self.vocabulary: dict[str, int] | None = None

    # --- reading ------------------------------------------------------------------------

    def _open(self) -> Any:
        datasets = require_datasets()
        if os.path.isdir(self.path):
            try:
                return datasets.load_from_disk(self.path)
            except Exception as error:
                raise ConfigError([f"data.path: {self.path} is not a dataset written by save_to_disk ({type(error).__name__}: {error})"]) from error
        try:
            return datasets.load_dataset(self.path, self.name)
        except Exception as error:
            raise ConfigError(
                [
                    f"data.path: no folder {self.path!r} here, and the hub dataset could not be loaded ({type(error).__name__}: "
                    f"{' '.join(str(error).split())[:240]}); without internet, save it where there is "
                    "(datasets.load_dataset(...).save_to_disk(FOLDER)) and set data.path=FOLDER"
                ]
            ) from error

    def _splits(self) -> tuple[Any, Any]:
        datasets = require_datasets()
        data = self._open()
        if isinstance(data, datasets.Dataset):
            if self.test_split is not None:
                raise ConfigError([f"data.test_split: {self.path} holds one dataset without splits; set data.test_split=null to hold out data.test_fraction of it"])
            return self._held_out(data)
        available = list(data.keys())
        wanted = [("split", self.split)] + ([("test_split", self.test_split)] if self.test_split is not None else [])
        bad = [f"data.{key} must be one of the dataset's splits ({', '.join(available)}), got {value!r}" for key, value in wanted if value not in data]
        if bad:
            raise ConfigError(bad)
        if self.test_split is None:
            return self._held_out(data[self.split])
        return data[self.split], data[self.test_split]

    def _held_out(self, data: Any) -> tuple[Any, Any]:
        self._require_columns(data)
        labels = self._raw_labels(data)
        codes = np.unique(labels, return_inverse=True)[1]
        train, test = stratified_split(codes, self.test_fraction, seeding.stream(self.seed, seeding.PARTITION, 1))
        return data.select(train), data.select(test)

    def _require_columns(self, data: Any) -> None:
        columns = list(data.column_names)
        wanted = [("feature_column", self.feature_column), ("label_column", self.label_column)]
        if self.group_column is not None:
            wanted.append(("group_column", self.group_column))
        bad = [f"data.{key} must be a column of the dataset ({', '.join(columns)}), got {value!r}" for key, value in wanted if value not in columns]
        if bad:
            raise ConfigError(bad)

    @staticmethod
    def _column(data: Any, column: str) -> list[Any]:
        return data.select_columns([column]).with_format(None)[column]

    def _raw_labels(self, data: Any) -> np.ndarray:
        return np.asarray(self._column(data, self.label_column))

    def _labels(self, train: Any, test: Any) -> tuple[np.ndarray, np.ndarray]:
        raw_train, raw_test = self._raw_labels(train), self._raw_labels(test)
        if raw_train.dtype.kind in "iu" and (raw_test.size == 0 or raw_test.dtype.kind in "iu"):
            return raw_train.astype(np.int64), raw_test.astype(np.int64)
        if raw_train.dtype.kind not in "UO" or (raw_test.size and raw_test.dtype.kind not in "UO"):
            raise ConfigError([f"data.label_column: {self.label_column!r} must hold integer classes or class names, got {raw_train.dtype}"])
        names = sorted(set(raw_train.tolist()))
        unseen = sorted(set(raw_test.tolist()) - set(names))
        if unseen:
            raise ConfigError([f"data.label_column: the test split has classes the training split lacks: {unseen[:5]}"])
        self.label_names = names
        index = {n: i for i, n in enumerate(names)}
        return np.array([index[v] for v in raw_train.tolist()], dtype=np.int64), np.array([index[v] for v in raw_test.tolist()], dtype=np.int64)

    def _kind(self, data: Any) -> str:
        if self.kind != "auto":
            return self.kind
        datasets = require_datasets()
        feature = data.features[self.feature_column]
        if isinstance(feature, datasets.Image):
            return "image"
        if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
            return "text"
        first = np.asarray(data.select_columns([self.feature_column]).with_format("numpy")[0][self.feature_column]) if len(data) else np.zeros(1)
        return "image" if first.ndim >= 2 else "features"

    def _images(self, data: Any) -> np.ndarray:
        column = data.select_columns([self.feature_column]).with_format("numpy")[self.feature_column]
        x = np.stack([np.asarray(v) for v in column]) if isinstance(column, list) else np.asarray(column)
        c, h, w = self.input_shape if len(self.input_shape) == 3 else (None, None, None)
        if x.ndim == 3 and c == 1:
            x = x[:, None]
        elif x.ndim == 4 and c is not None and x.shape[1:] != (c, h, w) and x.shape[1:] == (h, w, c):
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x)

    def _features(self, data: Any, kind: str) -> np.ndarray:
        """The feature column as an array; text is encoded with the vocabulary (built from the first call's texts, the training split)."""
        if kind == "text":
            texts = [str(t) for t in self._column(data, self.feature_column)]
            if self.vocabulary is None:
                self.vocabulary = build_vocabulary(texts, self.vocab_size)
            return encode_texts(texts, self.vocabulary, self.input_shape[0])
        if kind == "image":
            return self._images(data)
        return np.asarray(data.select_columns([self.feature_column]).with_format("numpy")[self.feature_column])

    # --- the data module --------------------------------------------------------------

    def load(self) -> tuple[TensorDataset, TensorDataset, np.ndarray | None]:
        """Both splits as tensors (float32 features, int64 for text); groups from ``group_column``."""
        train, test = self._splits()
        self._require_columns(train)
        self._require_columns_test(test)
        kind = self._kind(train)
        if kind == "text" and len(self.input_shape) != 1:
            raise ConfigError([f"data.input_shape must be [sequence length] for text, got {list(self.input_shape)}"])
        train_y, test_y = self._labels(train, test)
        self.vocabulary = None
        train_x = self._features(train, kind)
        test_x = self._features(test, kind)
        if kind == "text":
            return tensor_dataset(train_x, train_y, dtype=torch.int64), tensor_dataset(test_x, test_y, dtype=torch.int64), self._groups(train)
        if kind == "image" and train_x.dtype.kind in "iub":  # integer pixels are 0..255
            train_x, test_x = train_x.astype(np.float32) / 255.0, test_x.astype(np.float32) / 255.0
        train_x, test_x = train_x.astype(np.float32), test_x.astype(np.float32)
        if kind == "image" and self.normalize and train_x.ndim == 4:
            mean = train_x.mean(axis=(0, 2, 3), dtype=np.float64).astype(np.float32)[None, :, None, None]
            std = np.maximum(train_x.std(axis=(0, 2, 3), dtype=np.float64), 1e-12).astype(np.float32)[None, :, None, None]
            train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
        return tensor_dataset(train_x, train_y), tensor_dataset(test_x, test_y), self._groups(train)

    def _require_columns_test(self, data: Any) -> None:
        columns = list(data.column_names)
        bad = [f"data.{k} must be a column of the test split ({', '.join(columns)}), got {v!r}" for k, v in (("feature_column", self.feature_column), ("label_column", self.label_column)) if v not in columns]
        if bad:
            raise ConfigError(bad)

    def _groups(self, train: Any) -> np.ndarray | None:
        self.hf_train = train
        if self.group_column is None:
            return None
        return np.unique(np.asarray(self._column(train, self.group_column)), return_inverse=True)[1].astype(np.int64)

    def split_clients(self, targets: np.ndarray, groups: np.ndarray | None) -> list[np.ndarray]:
        """A Flower partitioner partitions the Hugging Face training split itself; other partitions the labels."""
        if isinstance(self.partition, FlowerPartition):
            return self.partition.split_dataset(self.hf_train, self.num_clients)
        return super().split_clients(targets, groups)
