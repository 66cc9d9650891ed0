"""The vectorised partitions give the clients of the per-client reference, and scale to many clients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_asyncfl import seeding
from lightning_asyncfl.client import PackedIndices
from lightning_asyncfl.data import IID, Dirichlet, Shards
from lightning_asyncfl.data.report import MAX_ROWS, class_counts, sample_rows, write_partition_report
from lightning_asyncfl.data.synthetic import Synthetic


def reference_dirichlet(targets, num_clients, rng, beta, min_samples, max_tries=1000):
    """The per-client loop the vectorised draw replaced (one list of pieces per client)."""
    by_class = [np.flatnonzero(targets == c) for c in np.unique(targets)]
    for _ in range(max_tries):
        pieces = [[] for _ in range(num_clients)]
        for idx in by_class:
            idx = rng.permutation(idx)
            p = rng.dirichlet(np.full(num_clients, beta))
            cuts = np.rint(np.cumsum(p) * len(idx)).astype(np.int64)[:-1]
            for k, piece in enumerate(np.split(idx, cuts)):
                pieces[k].append(piece)
        parts = [np.sort(np.concatenate(ps)) for ps in pieces]
        if min(len(p) for p in parts) >= min_samples:
            return parts
    raise AssertionError("no draw")


@pytest.mark.parametrize(("n", "num_clients", "beta", "min_samples"), [(500, 7, 0.5, 5), (3000, 300, 0.1, 0), (2000, 50, 5.0, 10)])
@pytest.mark.parametrize("seed", [0, 3])
def test_dirichlet_gives_the_per_client_references_clients(n, num_clients, beta, min_samples, seed):
    targets = np.random.default_rng(100 + seed).integers(0, 10, n)

    got = Dirichlet(beta=beta, min_samples=min_samples)(targets, num_clients, np.random.default_rng(seed))
    want = reference_dirichlet(targets, num_clients, np.random.default_rng(seed), beta, min_samples)

    assert len(got) == num_clients
    assert all(np.array_equal(g, w) for g, w in zip(got, want))


@pytest.mark.parametrize("partition", [IID(), Dirichlet(beta=0.3, min_samples=1), Shards(shards_per_client=2)], ids=repr)
def test_packed_is_the_call_in_two_arrays(partition):
    targets = np.random.default_rng(1).integers(0, 10, 4000)

    parts = partition(targets, 123, np.random.default_rng(2))
    flat, offsets = partition.packed(targets, 123, np.random.default_rng(2))

    assert flat.dtype == offsets.dtype == np.int64 and offsets[0] == 0 and offsets[-1] == len(flat)
    assert all(np.array_equal(flat[offsets[k] : offsets[k + 1]], parts[k]) for k in range(123))


def test_iid_packed_equals_numpy_array_split_of_the_permutation():
    targets = np.zeros(1003, dtype=np.int64)

    flat, offsets = IID().packed(targets, 10, np.random.default_rng(5))
    want = np.array_split(np.random.default_rng(5).permutation(1003), 10)

    assert np.diff(offsets).tolist() == [101, 101, 101, 100, 100, 100, 100, 100, 100, 100]
    assert all(np.array_equal(flat[offsets[k] : offsets[k + 1]], np.sort(w)) for k, w in enumerate(want))


def _synthetic(num_clients, partition, **kwargs):
    data = Synthetic(num_clients=num_clients, partition=partition, iid=True, max_samples_per_client=60, **kwargs)
    data.setup()
    return data


def test_a_data_module_keeps_the_clients_packed_with_the_lists_values():
    data = _synthetic(20, IID())
    flat, offsets = IID().packed(data.train_targets, 20, seeding.stream(0, seeding.PARTITION))

    assert isinstance(data.client_indices, PackedIndices)
    assert data.num_samples == np.diff(offsets).tolist()
    assert torch.equal(data.client_indices.flat, torch.from_numpy(flat))


def test_class_counts_match_a_per_client_bincount():
    data = _synthetic(25, Dirichlet(beta=0.2, min_samples=1))
    targets = np.asarray(data.train_targets)

    counts = class_counts(data)

    want = np.stack([np.bincount(targets[data.client_indices[k].numpy()], minlength=data.num_classes) for k in range(25)])
    assert counts.dtype == np.int64 and np.array_equal(counts, want)


def test_sample_rows_is_every_client_up_to_the_cap_then_an_even_sample():
    assert sample_rows(MAX_ROWS) is None
    rows = sample_rows(1_000_000)
    assert len(rows) == MAX_ROWS and rows[0] == 0 and rows[-1] == 999_999
    assert np.all(np.diff(rows) > 0) and np.diff(rows).max() - np.diff(rows).min() <= 1


def test_the_report_of_many_clients_keeps_every_row_in_the_csv_and_draws_a_sample(tmp_path):
    data = _synthetic(3000, IID(), dimension=4)

    csv_path, png_path = write_partition_report(data, tmp_path)

    rows = csv_path.read_text().splitlines()
    assert len(rows) == 3001 and rows[0].startswith("client,num_samples,class_0")
    assert [int(v) for v in rows[1].split(",")[:2]] == [0, data.num_samples[0]]
    assert png_path.stat().st_size > 0


@pytest.mark.parametrize("partition", [IID(), Dirichlet(beta=0.5, min_samples=2)], ids=repr)
def test_with_a_validation_split_the_packed_clients_are_split_clients_lists(partition):
    data = Synthetic(num_clients=15, partition=partition, iid=True, max_samples_per_client=60)
    data.hold_out_validation(0.1)
    data.setup()

    want = data.split_clients(data.train_targets, None)  # the per-client path, on the same kept samples

    assert isinstance(data.client_indices, PackedIndices) and len(data.val_indices) > 0
    assert all(np.array_equal(data.client_indices[k].numpy(), want[k]) for k in range(15))
    assert not np.isin(data.client_indices.flat.numpy(), data.val_indices.numpy()).any()
    assert data.num_samples == [len(w) for w in want]
