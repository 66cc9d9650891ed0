"""FlowerPartition: any Flower Datasets partitioner as this framework's partition.

Flower Datasets (Beutel et al., https://flower.ai/docs/datasets/,
https://github.com/adap/flower/tree/main/datasets) partitions a Hugging Face ``Dataset``
with a ``Partitioner``: ``partitioner.dataset = ds``, then ``partitioner.load_partition(i)``
is client i's rows. :class:`FlowerPartition` builds the partitioner a user configured
(``partition.partitioner._target_=flwr_datasets.partitioner.DirichletPartitioner ...``),
gives it the training set with one extra column holding each row's index, and reads
that column back from every partition: client i's index list is exactly the rows of
the partitioner's partition i, so a Flower user's partitioning carries over unchanged.

With ``data=hf`` the partitioner sees the Hugging Face training set itself (any column
can be ``partition_by``, e.g. a writer id for ``NaturalIdPartitioner``). With any other
dataset it sees a dataset of two columns: ``label`` (the training labels) and, when the
dataset has natural groups, ``group``.

The partitioner's randomness is its own ``seed`` argument (``${seed}`` in
``conf/partition/flwr.yaml``, so the run's seed decides it); the run's partition stream
is not used. A partitioner keeps the dataset it was given, so a fresh one is built from
the configuration at every split.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np

from lightning_asyncfl.data.partition import Partition
from lightning_asyncfl.errors import ConfigError

#: the column added to the dataset a partitioner sees: each row's index in the training set
INDEX_COLUMN = "__asyncfl_index__"
INSTALL = 'pip install "lightning-asyncfl[flwr]"'


def require_flwr() -> Any:
    """Import ``flwr_datasets``, or a ConfigError naming the extra to install."""
    try:
        import flwr_datasets
    except ImportError as error:
        raise ConfigError([f"partition=flwr needs Flower Datasets (flwr-datasets), which is not installed: {INSTALL}"]) from error
    return flwr_datasets


def _plain(node: Any) -> Any:
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # pragma: no cover - Hydra is a dependency
        return node
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


class FlowerPartition(Partition):
    """Client i = partition i of a Flower Datasets partitioner.

    Args:
        partitioner: the partitioner's configuration, a mapping with ``_target_`` (a
            ``flwr_datasets.partitioner`` class) and its arguments, or a partitioner
            object (copied before every split). Its number of partitions must equal
            ``data.num_clients``; a configuration without ``num_partitions`` gets it.
        client_test_fraction: see :class:`Partition`.

    Raises:
        ConfigError: Flower Datasets is not installed, or the partitioner cannot be built
            from the configuration (the error names the keys it does not take).
    """

    def __init__(self, *, partitioner: Mapping[str, Any] | Any, client_test_fraction: float = 0.0) -> None:
        super().__init__(client_test_fraction=client_test_fraction)
        require_flwr()
        self.partitioner = _plain(partitioner)
        self.build(num_clients=1)  # fail now, before any training, if the arguments are wrong (num_partitions, when left out, is the run's)

    def build(self, num_clients: int | None = None) -> Any:
        """A fresh partitioner without a dataset (``num_partitions=num_clients`` where the configuration leaves it out)."""
        from flwr_datasets.partitioner import Partitioner

        if not isinstance(self.partitioner, Mapping):
            if not isinstance(self.partitioner, Partitioner):
                raise ConfigError([f"partition.partitioner must be a flwr_datasets Partitioner or its config (a _target_ and arguments), got {type(self.partitioner).__name__}"])
            return copy.deepcopy(self.partitioner)
        node = dict(self.partitioner)
        target = node.pop("_target_", None)
        if not isinstance(target, str) or not target:
            raise ConfigError([f"partition.partitioner._target_ must be a Flower partitioner class, e.g. flwr_datasets.partitioner.DirichletPartitioner, got {target!r}"])
        from hydra.utils import get_class

        try:
            cls = get_class(target)
        except Exception as error:
            raise ConfigError([f"partition.partitioner._target_ must be an importable class, got {target!r} ({type(error).__name__}: {error})"]) from error
        if not (isinstance(cls, type) and issubclass(cls, Partitioner)):
            raise ConfigError([f"partition.partitioner._target_ must be a subclass of flwr_datasets.partitioner.Partitioner, got {target!r}"])
        params = inspect.signature(cls.__init__).parameters
        if num_clients is not None and "num_partitions" in params and "num_partitions" not in node:
            node["num_partitions"] = int(num_clients)
        unknown = [k for k in node if k not in params]
        missing = [n for n, p in params.items() if n != "self" and p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD and n not in node]
        if unknown or missing:
            parts = []
            if unknown:
                parts.append(f"{cls.__name__} does not take {', '.join(unknown)} (remove with " + " ".join(f"~partition.partitioner.{k}" for k in unknown) + ")")
            if missing:
                parts.append(f"{cls.__name__} needs {', '.join(missing)} (add with " + " ".join(f"+partition.partitioner.{k}=..." for k in missing) + ")")
            raise ConfigError([f"partition.partitioner: {'; '.join(parts)}"])
        try:
            return cls(**node)
        except (TypeError, ValueError) as error:
            raise ConfigError([f"partition.partitioner: {cls.__name__} refused its arguments ({type(error).__name__}: {error})"]) from error

    def _split(self, targets, num_clients, rng, groups):
        import datasets

        columns: dict[str, Any] = {"label": np.asarray(targets, dtype=np.int64)}
        if groups is not None:
            columns["group"] = np.asarray(groups, dtype=np.int64)
        return self._partitions(datasets.Dataset.from_dict(columns), num_clients)

    def split_dataset(self, dataset: Any, num_clients: int) -> list[np.ndarray]:
        """Client index lists from a Hugging Face training set (rows ``0 .. len - 1``).

        Returns:
            ``num_clients`` sorted, disjoint int64 arrays: partition i's rows.
        """
        parts = [np.sort(p) for p in self._partitions(dataset, num_clients)]
        self._check(parts, num_clients, len(dataset))
        return parts

    def _partitions(self, dataset: Any, num_clients: int) -> list[np.ndarray]:
        partitioner = self.build(num_clients)
        partitioner.dataset = dataset.add_column(INDEX_COLUMN, np.arange(len(dataset), dtype=np.int64))
        try:
            count = partitioner.num_partitions
        except Exception as error:  # a partitioner that reads the dataset to count (NaturalIdPartitioner) may fail here
            raise ConfigError([f"partition.partitioner: {type(partitioner).__name__} cannot partition this dataset ({type(error).__name__}: {error})"]) from error
        if count != num_clients:
            raise ConfigError([f"partition.partitioner gives {count} partitions but data.num_clients is {num_clients}: they must be equal (set data.num_clients={count})"])
        try:
            return [np.asarray(partitioner.load_partition(i)[INDEX_COLUMN], dtype=np.int64) for i in range(count)]
        except (KeyError, ValueError) as error:
            raise ConfigError([f"partition.partitioner: {type(partitioner).__name__} cannot partition this dataset ({type(error).__name__}: {error})"]) from error

    def __repr__(self) -> str:
        node = self.partitioner
        if isinstance(node, Mapping):
            args = ", ".join(f"{k}={v!r}" for k, v in node.items() if k != "_target_")
            return f"FlowerPartition({str(node.get('_target_', '?')).rsplit('.', 1)[-1]}({args}))"
        return f"FlowerPartition({node!r})"
