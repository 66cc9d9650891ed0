"""Datasets: Digits and Synthetic load, check and partition deterministically."""

from __future__ import annotations

import shutil
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from sklearn.datasets import load_digits

from lightning_asyncfl import seeding
from lightning_asyncfl.data import IID, Digits, Dirichlet, Natural, Shards, Synthetic
from lightning_asyncfl.data.synthetic import device_sizes
from lightning_asyncfl.errors import ConfigError, InvalidValue


def digits(**kwargs) -> Digits:
    dm = Digits(**{"num_clients": 10, **kwargs})
    dm.setup()
    return dm


def synthetic(**kwargs) -> Synthetic:
    dm = Synthetic(**{"num_clients": 6, "dimension": 12, "max_samples_per_client": 200, **kwargs})
    dm.setup()
    return dm


# --- Digits ---------------------------------------------------------------------------


def test_digits_shapes_and_ranges():
    dm = digits()

    x, y = dm.train_dataset.tensors
    tx, ty = dm.test_dataset.tensors
    assert x.dtype == tx.dtype == torch.float32 and y.dtype == ty.dtype == torch.int64
    assert tuple(x.shape[1:]) == tuple(tx.shape[1:]) == (1, 8, 8)
    assert len(x) + len(tx) == 1797
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert set(y.tolist()) == set(range(10))
    assert dm.train_targets.dtype == np.int64 and np.array_equal(dm.train_targets, y.numpy())


def test_digits_split_is_stratified():
    class_counts = np.bincount(load_digits().target)

    dm = digits(test_fraction=0.2)

    expected_test = [round(0.2 * c) for c in class_counts]
    assert np.bincount(dm.test_dataset.tensors[1].numpy()).tolist() == expected_test
    assert np.bincount(dm.train_targets).tolist() == (class_counts - expected_test).tolist()


def test_digits_same_seed_same_data_and_partition():
    a, b = digits(seed=3, partition=Dirichlet()), digits(seed=3, partition=Dirichlet())

    assert torch.equal(a.train_dataset.tensors[0], b.train_dataset.tensors[0])
    assert torch.equal(a.test_dataset.tensors[1], b.test_dataset.tensors[1])
    assert all(torch.equal(p, q) for p, q in zip(a.client_indices, b.client_indices))


def test_digits_different_seed_different_split():
    a, b = digits(seed=1), digits(seed=2)

    assert not torch.equal(a.test_dataset.tensors[0], b.test_dataset.tensors[0])
    assert not torch.equal(a.client_indices[0], b.client_indices[0])


def test_digits_clients_cover_the_training_set():
    dm = digits(partition=Shards(shards_per_client=2))

    assert len(dm.client_indices) == 10 and all(p.dtype == torch.int64 for p in dm.client_indices)
    assert torch.equal(torch.sort(torch.cat(list(dm.client_indices))).values, torch.arange(len(dm.train_dataset)))
    assert dm.num_samples == [len(p) for p in dm.client_indices]
    assert sum(dm.num_samples) == len(dm.train_dataset)


def test_client_dataset_and_test_dataloader():
    dm = digits()

    subset = dm.client_dataset(4)
    x, y = subset[0]
    batches = list(dm.test_dataloader(batch_size=100))

    assert len(subset) == dm.num_samples[4]
    assert torch.equal(x, dm.train_dataset.tensors[0][dm.client_indices[4][0]])
    assert [len(b[1]) for b in batches] == [100, 100, 100, len(dm.test_dataset) - 300]
    with pytest.raises(IndexError):
        dm.client_dataset(10)


def test_setup_is_idempotent():
    dm = digits()
    before = dm.client_indices

    dm.setup()

    assert dm.client_indices is before


@pytest.mark.parametrize(
    ("kwargs", "key"), [({"num_clients": 0}, "num_clients"), ({"test_fraction": 1.0}, "test_fraction")]
)
def test_digits_rejects_bad_config(kwargs, key):
    with pytest.raises(InvalidValue) as info:
        Digits(**{"num_clients": 10, **kwargs})

    assert info.value.key == key


def test_digits_wrong_input_shape_names_input_shape():
    with pytest.raises(InvalidValue) as info:
        digits(input_shape=[64])

    assert str(info.value) == "input_shape must be the dataset's sample shape [1, 8, 8], got [64]"


def test_digits_too_few_classes_names_num_classes():
    with pytest.raises(InvalidValue) as info:
        digits(num_classes=9)

    assert info.value.key == "num_classes"


def test_digits_more_clients_than_samples_names_num_clients():
    with pytest.raises(InvalidValue) as info:
        digits(num_clients=5000)

    assert info.value.key == "num_clients"


# --- Synthetic ------------------------------------------------------------------------


def test_synthetic_shapes_and_device_counts():
    sizes = device_sizes(6, 200, seeding.stream(0, seeding.PARTITION, 2))
    n_test = np.maximum(1, (0.2 * sizes).astype(int))

    dm = synthetic(seed=0)

    x, y = dm.train_dataset.tensors
    assert x.dtype == torch.float32 and tuple(x.shape) == (int((sizes - n_test).sum()), 12)
    assert tuple(dm.test_dataset.tensors[0].shape) == (int(n_test.sum()), 12)
    assert dm.device_train_sizes == (sizes - n_test).tolist()
    assert dm.device_test_sizes == n_test.tolist()
    assert int(y.min()) >= 0 and int(y.max()) < 10


def test_synthetic_deterministic():
    a, b, c = synthetic(seed=5), synthetic(seed=5), synthetic(seed=6)

    assert torch.equal(a.train_dataset.tensors[0], b.train_dataset.tensors[0])
    assert torch.equal(a.test_dataset.tensors[1], b.test_dataset.tensors[1])
    assert all(torch.equal(p, q) for p, q in zip(a.client_indices, b.client_indices))
    assert a.device_train_sizes != c.device_train_sizes


def test_synthetic_natural_partition_is_the_devices():
    dm = synthetic(partition=Natural())

    bounds = np.cumsum([0, *dm.device_train_sizes])
    for k, idx in enumerate(dm.client_indices):
        assert torch.equal(idx, torch.arange(bounds[k], bounds[k + 1]))
    assert dm.num_samples == dm.device_train_sizes


def test_synthetic_iid_variant():
    dm = synthetic(iid=True, partition=IID())

    assert tuple(dm.train_dataset.tensors[0].shape[1:]) == (12,)
    assert sum(dm.num_samples) == len(dm.train_dataset)


def test_synthetic_bad_input_shape_names_input_shape():
    with pytest.raises(InvalidValue) as info:
        synthetic(input_shape=[60])

    assert str(info.value) == "input_shape must be the dataset's sample shape [12], got [60]"


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"alpha": -1.0}, "alpha"),
        ({"dimension": 0}, "dimension"),
        ({"max_samples_per_client": 1}, "max_samples_per_client"),
    ],
)
def test_synthetic_rejects_bad_config(kwargs, key):
    with pytest.raises(InvalidValue) as info:
        Synthetic(**{"num_clients": 6, **kwargs})

    assert info.value.key == key


def test_natural_partition_on_digits_names_partition():
    with pytest.raises(ConfigError) as info:
        digits(partition=Natural())

    assert info.value.problems == ["partition=natural needs a dataset with natural groups (e.g. data=synthetic); this dataset has none"]


# --- configs --------------------------------------------------------------------------


@pytest.fixture
def conf_dir(tmp_path: Path) -> Path:
    """The data and partition groups of the real conf/, under a minimal primary config."""
    conf = Path(str(files("lightning_asyncfl.conf")))
    for group in ("data", "partition"):
        shutil.copytree(conf / group, tmp_path / group)
    (tmp_path / "config.yaml").write_text("defaults:\n  - partition: iid\n  - data: digits\n  - _self_\nseed: 0\n")
    return tmp_path


@pytest.mark.parametrize("partition", ["iid", "dirichlet", "shards"])
def test_digits_config_instantiates(conf_dir, partition):
    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        cfg = compose("config", overrides=[f"partition={partition}", "data.num_clients=5"])

    dm = instantiate(cfg.data, partition=instantiate(cfg.partition), seed=cfg.seed)
    dm.setup()

    assert isinstance(dm, Digits) and len(dm.client_indices) == 5


def test_synthetic_config_defaults_to_natural(conf_dir):
    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        cfg = compose("config", overrides=["data=synthetic", "data.num_clients=4", "data.dimension=7"])

    dm = instantiate(cfg.data, partition=instantiate(cfg.partition), seed=cfg.seed)
    dm.setup()

    assert isinstance(dm.partition, Natural)
    assert dm.input_shape == (7,)
    assert dm.num_samples == dm.device_train_sizes
