"""``partition=given`` (index lists in Python or a file, read as data) and ``TensorFederatedData``."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from lightning_asyncfl.data import Given, TensorFederatedData
from lightning_asyncfl.data.given import read_index_lists
from lightning_asyncfl.data.tensors import read_tensors
from lightning_asyncfl.errors import ConfigError, InvalidValue
from lightning_asyncfl.run import build

RNG = np.random.default_rng(0)
TARGETS = np.arange(20) % 4


def test_given_lists_are_the_clients_exactly_without_randomness():
    # Prepare
    lists = [[3, 1, 2], [10, 11], [19]]

    # Execute
    parts = Given(index_lists=lists)(TARGETS, 3, RNG)

    # Assert
    assert [p.tolist() for p in parts] == [[1, 2, 3], [10, 11], [19]]
    assert all(p.dtype == np.int64 for p in parts)


@pytest.mark.parametrize(
    ("lists", "clients", "message"),
    [
        ([[0, 1], [1, 2]], 2, "index_lists[1] must be disjoint lists: each sample belongs to at most one client, got \"index 1, already in client 0's list\""),
        ([[0, 20]], 1, "index_lists[0] must be indices in [0, 20): the 20 samples of the training set, got 'index 20'"),
        ([[0, -1]], 1, "index_lists[0] must be indices in [0, 20): the 20 samples of the training set, got 'index -1'"),
        ([[0, 0]], 1, "index_lists[0] must be each sample at most once per client, got 'index 0 listed twice'"),
        ([[0], [1]], 3, "index_lists must be one index list per client: data.num_clients is 3 (or null to take the lists' count), got '2 index lists'"),
    ],
)
def test_bad_lists_name_the_key_the_value_and_what_is_allowed(lists, clients, message):
    with pytest.raises(InvalidValue) as error:
        Given(index_lists=lists)(TARGETS, clients, RNG)

    assert str(error.value) == message


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "index_lists must be set exactly one of partition.index_lists (a list of lists) and partition.file (a path), got None"),
        ({"index_lists": [[0]], "file": "x.json"}, "set exactly one of"),
        ({"index_lists": [[0], []]}, "index_lists[1] must be a non-empty list of sample indices (every client needs a training sample), got []"),
        ({"index_lists": [[0.5, 1]]}, "index_lists[0] must be a flat list of integer sample indices, got [0.5, 1.0]"),
        ({"index_lists": "0,1"}, "index_lists must be a non-empty list of lists of sample indices, one per client, got '0,1'"),
    ],
)
def test_bad_given_arguments_are_refused_when_built(kwargs, message):
    with pytest.raises(InvalidValue, match=None) as error:
        Given(**kwargs)

    assert message in str(error.value)


def _write(path, lists):
    suffix = path.suffix
    if suffix == ".json":
        path.write_text(json.dumps(lists))
    elif suffix == ".npy":
        np.save(path, np.asarray(lists, dtype=np.int64))
    elif suffix == ".npz":
        np.savez(path, *[np.asarray(p) for p in lists])
    else:
        torch.save([torch.tensor(p) for p in lists], path)


@pytest.mark.parametrize("name", ["lists.json", "lists.npy", "lists.npz", "lists.pt"])
def test_index_lists_are_read_from_json_npy_npz_and_pt(tmp_path, name):
    # Prepare
    lists = [[0, 4, 8], [1, 5, 9], [2, 6, 10]]
    _write(tmp_path / name, lists)

    # Execute
    parts = Given(file=str(tmp_path / name))(TARGETS, 3, RNG)

    # Assert
    assert [p.tolist() for p in parts] == lists


def test_a_json_object_keyed_by_client_ids_is_read_in_id_order(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"1": [5], "0": [2, 3], "2": [7]}))

    assert [p.tolist() for p in read_index_lists(tmp_path / "c.json")] == [[2, 3], [5], [7]]


class Payload:
    """Unpickling this would run code; the readers must refuse it."""

    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.parametrize("name", ["evil.pt", "evil.npy"])
def test_files_that_would_run_code_are_refused(tmp_path, name, capsys):
    # Prepare
    path = tmp_path / name
    if name.endswith(".pt"):
        torch.save([Payload()], path)
    else:
        np.save(path, np.array([Payload()], dtype=object), allow_pickle=True)

    # Execute
    with pytest.raises(InvalidValue) as error:
        read_index_lists(path)

    # Assert
    assert str(error.value).startswith("file must be a .json list of lists")
    assert "code ran" not in capsys.readouterr().out


def test_an_unknown_suffix_and_a_missing_file_say_which_formats_are_read(tmp_path):
    (tmp_path / "l.pkl").write_bytes(pickle.dumps([[0]]))

    for path in (tmp_path / "l.pkl", tmp_path / "missing.json"):
        with pytest.raises(InvalidValue, match=r"\.json list of lists, a \.npy 2-D integer array, a \.npz of 1-D integer arrays, or a \.pt list"):
            read_index_lists(path)


def _tensors(n=40, m=10):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 4, 4, generator=g), torch.arange(n) % 3, torch.randn(m, 1, 4, 4, generator=g), torch.arange(m) % 3


def test_tensor_data_infers_the_shape_the_classes_and_the_clients_of_given_lists():
    # Prepare
    x, y, xt, yt = _tensors()
    data = TensorFederatedData(x.double(), y.tolist(), xt.numpy(), yt, partition=Given(index_lists=[[0, 1], [2, 3, 4]]))

    # Execute
    data.setup()

    # Assert
    assert (data.num_clients, data.input_shape, data.num_classes) == (2, (1, 4, 4), 3)
    assert data.num_samples == [2, 3]
    assert data.train_dataset.tensors[0].dtype == torch.float32 and torch.equal(data.train_dataset.tensors[0], x.double().float())
    assert torch.equal(data.test_dataset.tensors[1], yt)


def test_tensor_data_without_given_lists_needs_num_clients():
    x, y, xt, yt = _tensors()

    with pytest.raises(InvalidValue, match=r"num_clients must be an integer >= 1 \(null only with given index lists"):
        TensorFederatedData(x, y, xt, yt).setup()


def test_the_validation_split_is_held_out_of_the_tensors_and_out_of_given_lists():
    # Prepare: every training row is some client's
    x, y, xt, yt = _tensors()
    lists = [list(range(0, 20)), list(range(20, 40))]
    data = TensorFederatedData(x, y, xt, yt, partition=Given(index_lists=lists))
    data.hold_out_validation(0.25)

    # Execute
    data.setup()

    # Assert: the validation rows (stratified, 25% of each class) are no client's, the rest keep their client
    val = set(data.val_indices.tolist())
    assert len(val) == 10 and len(data.val_dataset) == 10
    assert [sorted(set(p) - val) for p in lists] == [p.tolist() for p in data.client_indices]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"x": torch.zeros(3, 2)}, "x must be all four of x, y, x_test, y_test given (or file=PATH), got 'missing y, x_test, y_test'"),
        ({"x": torch.zeros(3, 2), "y": torch.zeros(4, dtype=torch.int64), "x_test": torch.zeros(1, 2), "y_test": torch.zeros(1, dtype=torch.int64)}, "y must be one label per row of x (3), got '4 labels'"),
        ({"x": torch.zeros(3, 2), "y": torch.zeros(3), "x_test": torch.zeros(1, 2), "y_test": torch.zeros(1, dtype=torch.int64)}, "y must be integer labels of shape (samples,), got 'torch.float32 of shape [3]'"),
    ],
)
def test_bad_tensors_name_the_key_the_value_and_what_is_allowed(kwargs, message):
    with pytest.raises((InvalidValue, ValueError)) as error:
        TensorFederatedData(**kwargs)

    assert message in str(error.value)


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_tensors_are_read_from_a_pt_or_npz_file(tmp_path, suffix):
    # Prepare
    x, y, xt, yt = _tensors()
    path = tmp_path / f"data{suffix}"
    if suffix == ".pt":
        torch.save({"x": x, "y": y, "x_test": xt, "y_test": yt}, path)
    else:
        np.savez(path, x=x.numpy(), y=y.numpy(), x_test=xt.numpy(), y_test=yt.numpy())

    # Execute
    data = TensorFederatedData(file=str(path), num_clients=4)
    data.setup()

    # Assert
    assert torch.equal(data.train_dataset.tensors[0], x) and torch.equal(data.test_dataset.tensors[1], yt)


def test_a_tensor_file_without_the_four_arrays_or_with_code_is_refused(tmp_path):
    torch.save({"x": torch.zeros(2)}, tmp_path / "part.pt")
    torch.save({"x": Payload()}, tmp_path / "evil.pt")

    with pytest.raises(InvalidValue, match=r"it lacks y, x_test, y_test \(found \['x'\]\)"):
        read_tensors(tmp_path / "part.pt")
    with pytest.raises(InvalidValue, match=r"file must be an existing \.pt file of a dict of tensors .*UnpicklingError"):
        read_tensors(tmp_path / "evil.pt")


def test_the_cli_config_reports_a_wrong_client_count_under_the_partition_key(make_cfg, tmp_path):
    # Prepare
    (tmp_path / "lists.json").write_text(json.dumps([[0, 1], [2, 3]]))

    # Execute
    with pytest.raises(ConfigError) as error:
        build(make_cfg("partition=given", f"partition.file={tmp_path / 'lists.json'}", "data.num_clients=3"))

    # Assert
    assert "partition.file must be one index list per client: data.num_clients is 3 (or null to take the lists' count), got '2 index lists'" in str(error.value)
