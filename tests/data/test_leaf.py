"""LEAF's FEMNIST and Shakespeare read from files in LEAF's own JSON format.

One client per user, LEAF's per-user test split (``client_test_source`` and
``client_test_indices``), seeded user sampling, the errors of missing files, and runs end
to end (evaluated on exactly the users' LEAF test rows, resumable bit for bit).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightning_asyncfl.checkpoint import list_checkpoints
from lightning_asyncfl.data import FEMNIST, Shakespeare
from lightning_asyncfl.data.leaf import ALL_LETTERS
from lightning_asyncfl.data.partition import Natural
from lightning_asyncfl.errors import ConfigError
from lightning_asyncfl.models import CNN, CharLSTM
from lightning_asyncfl.run import compose, run
from tests.data.leaf_fixtures import write_femnist, write_shakespeare
from tests.test_checkpoint import _same_run
from tests.conftest import SMALL

FEMNIST_SIZES = [(12, 3), (20, 4), (7, 2), (15, 3), (9, 0)]  # the last writer has no test rows
SHAKESPEARE_SIZES = [(24, 5), (14, 3), (19, 4)]
#: a tiny run: the LEAF data's default model shrunk, two clients in flight
TINY = ["progress=false", "server.max_steps=4", "server.eval_every=2", "server.scheduler.concurrency=2"]
TINY_CNN = ["model.channels=[4,8]", "model.hidden=16"]
TINY_LSTM = ["model.hidden=16"]


def _femnist_x(rows: list) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32).reshape(-1, 1, 28, 28)


def _ids(text: str) -> list[int]:
    return [ALL_LETTERS.index(c) for c in text]


def test_leafs_vocabulary_is_its_80_symbols():
    assert len(ALL_LETTERS) == 80 and len(set(ALL_LETTERS)) == 80
    assert ALL_LETTERS[:4] == "\n !\"" and ALL_LETTERS.endswith("xyz}")


def test_femnist_gives_one_client_per_writer_and_each_writers_own_test_rows(tmp_path):
    # Prepare
    written = write_femnist(tmp_path, FEMNIST_SIZES)
    users = list(written["train"])
    dm = FEMNIST(root=tmp_path, partition=Natural())

    # Execute
    dm.setup()

    # Assert: client k holds exactly writer k's training rows, in LEAF's order
    assert dm.num_clients == len(users) == 5 and dm.users == users
    assert dm.num_samples == [n for n, _ in FEMNIST_SIZES]
    x, y = dm.train_dataset.tensors
    assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28)
    for k, user in enumerate(users):
        idx = dm.client_indices[k]
        np.testing.assert_array_equal(x[idx].numpy(), _femnist_x(written["train"][user]["x"]))
        np.testing.assert_array_equal(y[idx].numpy(), written["train"][user]["y"])
    # the test set is every writer's LEAF test rows; client k's test indices are writer k's rows
    assert dm.client_test_source is dm.test_dataset
    assert [len(t) for t in dm.client_test_indices] == [n for _, n in FEMNIST_SIZES]
    tx, ty = dm.test_dataset.tensors
    for k, user in enumerate(users):
        idx = dm.client_test_indices[k]
        assert idx.dtype == torch.int64
        if user in written["test"]:
            np.testing.assert_array_equal(tx[idx].numpy(), _femnist_x(written["test"][user]["x"]))
            np.testing.assert_array_equal(ty[idx].numpy(), written["test"][user]["y"])
    assert sorted(torch.cat(dm.client_test_indices).tolist()) == list(range(len(ty)))


def test_shakespeare_maps_characters_to_leafs_indices_and_keeps_them_int64(tmp_path):
    written = write_shakespeare(tmp_path, SHAKESPEARE_SIZES)
    dm = Shakespeare(root=tmp_path, partition=Natural())

    dm.setup()

    x, y = dm.train_dataset.tensors
    assert x.dtype == torch.int64 and x.shape[1:] == (80,) and dm.num_classes == 80
    first = next(iter(written["train"]))
    rows = written["train"][first]
    idx = dm.client_indices[0]
    assert x[idx].tolist() == [_ids(s) for s in rows["x"]]
    assert y[idx].tolist() == [ALL_LETTERS.index(c) for c in rows["y"]]
    assert dm.client_test_indices is not None and [len(t) for t in dm.client_test_indices] == [n for _, n in SHAKESPEARE_SIZES]


def test_a_character_outside_the_vocabulary_reads_as_a_space_and_is_logged(tmp_path, caplog):
    write_shakespeare(tmp_path, [(2, 1)])
    path = next((tmp_path / "train").glob("*.json"))
    content = json.loads(path.read_text())
    user = content["users"][0]
    content["user_data"][user]["x"][0] = "|" + content["user_data"][user]["x"][0][1:]
    path.write_text(json.dumps(content))

    dm = Shakespeare(root=tmp_path, partition=Natural())
    dm.setup()

    assert dm.train_dataset.tensors[0][0, 0].item() == ALL_LETTERS.index(" ")
    assert "1 characters outside LEAF's 80-symbol vocabulary" in caplog.text


def test_user_sampling_is_seeded_and_keeps_each_users_test_rows(tmp_path):
    written = write_femnist(tmp_path, [(3 + k, 1 + k % 3) for k in range(10)])
    everyone = list(written["train"])

    def sampled(seed: int, **kwargs) -> FEMNIST:
        dm = FEMNIST(root=tmp_path, partition=Natural(), seed=seed, **kwargs)
        dm.setup()
        return dm

    a, again, other = sampled(0, user_fraction=0.4), sampled(0, user_fraction=0.4), sampled(1, user_fraction=0.4)
    exact = sampled(0, num_clients=7)

    assert a.users == again.users and len(a.users) == 4 and a.num_clients == 4
    assert a.users != other.users  # another seed, another sample (of 210 possible)
    assert a.users == [u for u in everyone if u in a.users]  # kept in LEAF's order
    assert len(exact.users) == exact.num_clients == 7
    tx = a.test_dataset.tensors[0]
    for k, user in enumerate(a.users):
        np.testing.assert_array_equal(tx[a.client_test_indices[k]].numpy(), _femnist_x(written["test"][user]["x"]))
    assert len(a.test_dataset) == sum(len(written["test"][u]["y"]) for u in a.users)


def test_sampling_settings_are_checked(tmp_path):
    write_femnist(tmp_path, [(3, 1), (3, 1)])
    with pytest.raises(ValueError, match="user_fraction must be in \\(0, 1\\], got 0"):
        FEMNIST(root=tmp_path, user_fraction=0)
    with pytest.raises(ValueError, match="user_fraction must be 1.0 when num_clients is set"):
        FEMNIST(root=tmp_path, num_clients=1, user_fraction=0.5)
    with pytest.raises(ConfigError, match="data.num_clients must be <= the 2 users"):
        FEMNIST(root=tmp_path, num_clients=3, partition=Natural()).setup()


def test_a_user_split_has_no_per_client_test_rows_and_tests_on_every_test_user(tmp_path):
    # LEAF's -t user: the test files hold other users
    write_femnist(tmp_path / "a", [(5, 0), (6, 0)], seed=1)
    write_femnist(tmp_path / "b", [(0, 4), (0, 3), (0, 2)], seed=2)
    shutil.copytree(tmp_path / "a" / "train", tmp_path / "leaf" / "train")
    shutil.copytree(tmp_path / "b" / "test", tmp_path / "leaf" / "test")
    for i, path in enumerate(sorted((tmp_path / "leaf" / "test").glob("*.json"))):  # rename the held-out users
        path.write_text(path.read_text().replace('"f0', f'"held{i}_f0'))

    dm = FEMNIST(root=tmp_path / "leaf", partition=Natural())
    dm.setup()

    assert dm.num_clients == 2 and len(dm.test_dataset) == 9
    assert dm.client_test_source is None and dm.client_test_indices is None


def test_a_user_without_training_rows_is_not_a_client(tmp_path):
    write_femnist(tmp_path, [(4, 1), (0, 2), (3, 1)])
    dm = FEMNIST(root=tmp_path, partition=Natural())
    dm.setup()
    assert dm.num_clients == 2 and dm.num_samples == [4, 3]
    assert [len(t) for t in dm.client_test_indices] == [1, 1] and len(dm.test_dataset) == 2


@pytest.mark.parametrize("cls, name, command", [(FEMNIST, "femnist", "-t sample"), (Shakespeare, "shakespeare", "-tf 0.8")])
def test_missing_files_name_the_folders_and_leafs_command(cls, name, command, tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(ConfigError) as error:
        cls(root=tmp_path).setup()
    text = str(error.value)
    assert f"{tmp_path / 'train' / '*.json'} and {tmp_path / 'test' / '*.json'}" in text
    assert f"cd leaf/data/{name} && ./preprocess.sh -s niid" in text and command in text
    assert "https://github.com/TalwalkarLab/leaf" in text


def test_a_file_not_in_leafs_format_is_named(tmp_path):
    write_femnist(tmp_path, [(2, 1)])
    (tmp_path / "train" / "zz_other.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(ConfigError, match="zz_other.json is not a LEAF data file"):
        FEMNIST(root=tmp_path).setup()


# -- runs ---------------------------------------------------------------------------------


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    with torch.inference_mode():
        logits = model(x)
    return float((logits.argmax(1) == y).float().mean()), float(F.cross_entropy(logits, y))


@pytest.mark.parametrize(
    "data, write, sizes, model, extra",
    [
        ("femnist", write_femnist, FEMNIST_SIZES, lambda: CNN(input_shape=[1, 28, 28], num_classes=62, channels=[4, 8], hidden=16), TINY_CNN),
        ("shakespeare", write_shakespeare, SHAKESPEARE_SIZES, lambda: CharLSTM(input_shape=[80], num_classes=80, hidden=16), TINY_LSTM),
    ],
)
def test_a_run_trains_one_client_per_user_and_evaluates_on_leafs_test_rows(data, write, sizes, model, extra, make_cfg, tmp_path):
    # Prepare
    written = write(tmp_path / "leaf", sizes)

    # Execute
    summary = run(make_cfg(f"data={data}", f"data.root={tmp_path / 'leaf'}", *TINY, *extra))

    # Assert: one client per user; the reported test metrics are the final model's on the users' LEAF test rows
    assert summary["status"] == "completed" and summary["num_clients"] == len(written["train"])
    net = model()
    net.load_state_dict(torch.load(Path(summary["output_dir"]) / "final_model.pt", weights_only=True))
    net.eval()
    users = [u for u in written["train"] if u in written["test"]]
    if data == "femnist":
        x = torch.from_numpy(np.concatenate([_femnist_x(written["test"][u]["x"]) for u in users]))
        y = torch.tensor([c for u in users for c in written["test"][u]["y"]])
    else:
        x = torch.tensor([_ids(s) for u in users for s in written["test"][u]["x"]])
        y = torch.tensor([ALL_LETTERS.index(c) for u in users for c in written["test"][u]["y"]])
    accuracy, loss = _accuracy(net, x, y)
    assert summary["final_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert summary["final_loss"] == pytest.approx(loss, rel=1e-5)


def test_a_shakespeare_run_resumed_from_its_checkpoints_gives_the_uninterrupted_bytes(make_cfg, tmp_path):
    write_shakespeare(tmp_path / "leaf", SHAKESPEARE_SIZES)
    whole = tmp_path / "run"
    overrides = ["data=shakespeare", f"data.root={tmp_path / 'leaf'}", "data.user_fraction=0.67", *TINY, *TINY_LSTM,
                 "server.max_steps=6", "checkpoint.every_n_steps=2", "checkpoint.keep_last=10"]  # fmt: skip
    run(make_cfg(*overrides))
    checkpoints = [p for _, p in list_checkpoints(whole / "checkpoints")][:-1]
    assert len(checkpoints) == 2

    copy = tmp_path / "resumed"
    shutil.copytree(whole, copy)
    summary = run(compose([*SMALL, *overrides, f"resume={copy / 'checkpoints' / checkpoints[0].name}"]))  # the same command, resumed

    assert summary["status"] == "completed" and summary["num_clients"] == 2
    _same_run(whole, copy)
