"""Prepared torchvision files without the MD5 check, and Dirichlet errors that say what to change."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from lightning_asyncfl.data import CIFAR10, CIFAR100, SVHN, Dirichlet, FederatedDataModule
from lightning_asyncfl.data.vision import safe_unpickle
from lightning_asyncfl.errors import ConfigError, InvalidValue
from lightning_asyncfl.run import run
from tests.data.vision_fixtures import write_cifar10, write_cifar100, write_svhn


@pytest.mark.parametrize("cls, write", [(CIFAR10, write_cifar10), (CIFAR100, write_cifar100), (SVHN, write_svhn)])
def test_check_integrity_false_reads_prepared_files_exactly(cls, write, tmp_path):
    # Prepare: files in the real format whose MD5 cannot match the official release
    written = write(tmp_path)

    # Execute: no patch of torchvision, only the key
    dm = cls(num_clients=2, root=tmp_path, check_integrity=False, normalize=False)
    dm.setup()

    # Assert: the images and labels written, and with the check on the same files are refused with the advice
    x, y = dm.train_dataset.tensors
    np.testing.assert_array_equal((x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy(), written.train_images)
    np.testing.assert_array_equal(y.numpy(), written.train_labels)
    np.testing.assert_array_equal(dm.test_dataset.tensors[1].numpy(), written.test_labels)
    with pytest.raises(ConfigError, match="fail torchvision's checksum .* or set data.check_integrity=false for files you prepared yourself"):
        cls(num_clients=2, root=tmp_path).setup()


def test_check_integrity_false_through_the_config(make_cfg, tmp_path):
    write_cifar10(tmp_path / "data")
    summary = run(make_cfg("data=cifar10", f"data.root={tmp_path / 'data'}", "data.check_integrity=false", "data.num_clients=4",
                           "partition=iid", "server.scheduler.concurrency=2", "model.channels=[4,4]", "model.hidden=[8,8]",
                           "server.max_steps=2", "server.eval_every=2"))  # fmt: skip
    assert summary["status"] == "completed" and summary["failed"] == 0


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_an_unverified_cifar_pickle_cannot_run_code(tmp_path):
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(pickle.dumps({"data": _Boom(), "labels": []}, protocol=2))

    with pytest.raises(pickle.UnpicklingError, match="refused to build posix.system"):
        safe_unpickle(batch)
    with pytest.raises(ConfigError, match="CIFAR-10 files are unreadable .*refused to build posix.system"):
        CIFAR10(num_clients=2, root=tmp_path, check_integrity=False).setup()


def test_a_missing_file_without_the_check_is_still_named(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(ConfigError, match=r"CIFAR-10 files not found: expected .*test_batch.* \(1 of 7 missing\)"):
        CIFAR10(num_clients=2, root=tmp_path, check_integrity=False).setup()


# -- Dirichlet: what to change -------------------------------------------------------------


def test_too_many_clients_for_min_samples_names_both_fixes_with_numbers():
    targets = np.arange(500) % 10
    with pytest.raises(InvalidValue) as error:
        Dirichlet(beta=0.5, min_samples=10)(targets, 100, np.random.default_rng(0))
    assert str(error.value) == (
        "min_samples must be <= 5 (the 500 training samples shared by 100 clients); lower partition.min_samples to 5 "
        "or less, or use data.num_clients=50 or fewer, got 10"
    )


def test_an_unreachable_min_samples_suggests_values_that_work():
    # 100 clients x 500 images: no Dir(0.5) draw gives everyone 4
    targets = np.arange(500) % 10
    with pytest.raises(InvalidValue) as error:
        Dirichlet(beta=0.5, min_samples=4, max_tries=200)(targets, 100, np.random.default_rng(0))
    text = str(error.value)
    assert text.startswith("min_samples must be reachable: no Dir(beta=0.5) split in 200 tries gave each of the 100 clients 4 samples (500 samples, 5 per client on average); lower partition.min_samples to ")
    best = int(text.split("lower partition.min_samples to ")[1].split(" ")[0])
    clients = int(text.split("use data.num_clients=")[1].split(" ")[0])
    # the suggestions hold: a split with the suggested min_samples, or with the suggested clients, exists
    Dirichlet(beta=0.5, min_samples=best, max_tries=200)(targets, 100, np.random.default_rng(0))
    Dirichlet(beta=0.5, min_samples=4, max_tries=200)(targets, clients, np.random.default_rng(0))
    assert 0 < best < 4 and clients < 100


def test_the_advice_reaches_the_user_under_partition(tmp_path):
    class Tiny(FederatedDataModule):
        def load(self):
            x, y = torch.zeros(500, 2), torch.arange(500) % 10
            return torch.utils.data.TensorDataset(x, y), torch.utils.data.TensorDataset(x[:10], y[:10]), None

    with pytest.raises(ConfigError, match="partition.min_samples must be reachable: .* or use data.num_clients="):
        Tiny(num_clients=100, input_shape=[2], num_classes=10, partition=Dirichlet(beta=0.5, min_samples=4, max_tries=50)).setup()


def test_client_test_data_is_none_unless_a_dataset_has_its_own():
    from lightning_asyncfl.data import Digits

    dm = Digits(num_clients=3)
    dm.setup()
    assert dm.client_test_source is None and dm.client_test_indices is None
