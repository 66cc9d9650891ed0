"""``lightning_asyncfl.fit``: ready objects in (tensors, index lists, a LightningModule), a Result out.

The acceptance test of the Python API: a run driven by in-memory tensors, given index
lists and a CNN defined inside the test gives back the final model and the history, and
the same run through the command line (the tensors and lists in files, the CNN as a
``_target_`` in tests/user_cnn.py) gives the same bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import lightning_asyncfl
from lightning_asyncfl import seeding
from lightning_asyncfl.data import Digits, Given, TensorFederatedData
from lightning_asyncfl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
#: a short run on 4 clients: 6 versions, the lists exactly as given (no validation rows taken out)
SHORT = ["progress=false", "server.max_steps=6", "server.eval_every=3", "eval.val_fraction=0", "server.scheduler.concurrency=2"]


def _digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(y, dtype=torch.int64)
    return x[:1400], y[:1400], x[1400:], y[1400:]


#: four clients of unequal sizes, not covering every row (rows 1200.. are nobody's)
LISTS = [list(range(0, 300)), list(range(300, 400)), list(range(400, 800, 2)), list(range(801, 1200, 3))]


def test_fit_with_tensors_lists_and_a_cnn_defined_here_gives_the_model_and_history_and_the_cli_the_same_bytes(tmp_path):
    # Prepare: a user's CNN with no importable module (the same code as tests/user_cnn.py)
    class TinyCNN(L.LightningModule):
        def __init__(self, num_classes: int = 10, lr: float = 0.1) -> None:
            super().__init__()
            self.lr = lr
            self.net = nn.Sequential(
                nn.Conv2d(1, 4, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(4 * 4 * 4, num_classes),
            )  # fmt: skip

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self(x), y)
            self.log("loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            logits = self(x)
            self.log("loss", F.cross_entropy(logits, y))
            self.log("accuracy", (logits.argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr)

    x, y, x_test, y_test = _digits()

    # Execute: from Python
    result = lightning_asyncfl.fit(
        SHORT, data=TensorFederatedData(x, y, x_test, y_test), partition=LISTS, model=TinyCNN, output_dir=tmp_path / "python",
    )  # fmt: skip

    # Assert: the final model object, its state dict, the history, the updates, the run directory
    assert isinstance(result.model, TinyCNN)
    assert result.run_dir == (tmp_path / "python").resolve()
    assert result.model.state_dict().keys() == result.state_dict.keys()
    assert all(torch.equal(result.model.state_dict()[k], v) for k, v in result.state_dict.items())
    saved = torch.load(result.run_dir / "final_model.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in result.state_dict.items())
    assert [row["version"] for row in result.history] == [0, 3, 6]
    assert result.history[-1]["test_accuracy"] == result.summary["final_accuracy"]
    assert result.summary["steps"] == 6 and result.summary["num_clients"] == 4
    assert [u["num_samples"] for u in result.updates] == [len(LISTS[u["client_id"]]) for u in result.updates]
    assert {u["status"] for u in result.updates} == {"accepted"}
    assert json.loads((result.run_dir / "summary.json").read_text()) == result.summary

    # Execute: the same run from the command line, with the tensors, the lists and the CNN in files
    torch.save({"x": x, "y": y, "x_test": x_test, "y_test": y_test}, tmp_path / "data.pt")
    (tmp_path / "clients.json").write_text(json.dumps(LISTS))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cli = subprocess.run(
        [sys.executable, "-m", "lightning_asyncfl", *SHORT, f"output_dir={tmp_path / 'cli'}",
         "data=tensors", f"data.file={tmp_path / 'data.pt'}", "data.input_shape=[1,8,8]", "data.num_classes=10",
         "partition=given", f"partition.file={tmp_path / 'clients.json'}",
         "~model", "+model={_target_: tests.user_cnn.TinyCNN}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    # Assert: the same bytes
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert (tmp_path / "cli" / "final_model.pt").read_bytes() == (result.run_dir / "final_model.pt").read_bytes()
    assert json.loads((tmp_path / "cli" / "summary.json").read_text())["final_accuracy"] == result.summary["final_accuracy"]


def _tiny_model_factory():
    from tests.user_cnn import TinyCNN

    return TinyCNN


def test_a_model_object_is_the_initial_model_and_a_class_is_built_under_the_runs_model_seed(tmp_path):
    # Prepare: the instance made exactly as the run makes a class under its model seed
    TinyCNN = _tiny_model_factory()
    x, y, x_test, y_test = _digits()
    data = TensorFederatedData(x, y, x_test, y_test)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeding.derive_seed(0, seeding.MODEL))
        instance = TinyCNN()
    before = {k: v.clone() for k, v in instance.state_dict().items()}

    # Execute
    from_class = lightning_asyncfl.fit(SHORT, data=data, partition=LISTS, model=TinyCNN, output_dir=tmp_path / "class")
    from_object = lightning_asyncfl.fit(SHORT, data=data, partition=LISTS, model=instance, output_dir=tmp_path / "object")

    # Assert: the same bytes, and the caller's object and data untouched
    assert all(torch.equal(from_class.state_dict[k], v) for k, v in from_object.state_dict.items())
    assert all(torch.equal(instance.state_dict()[k], v) for k, v in before.items())
    assert data.train_dataset is None
    assert from_object.config.model["weights_sha256"] and from_class.config.model == {"_given_": "tests.user_cnn.TinyCNN"}


def test_fit_resumes_like_the_cli_and_refuses_other_data(tmp_path):
    # Prepare
    TinyCNN = _tiny_model_factory()
    x, y, x_test, y_test = _digits()
    data = TensorFederatedData(x, y, x_test, y_test)
    common = dict(data=data, partition=LISTS, model=TinyCNN)
    full = lightning_asyncfl.fit([*SHORT, "server.max_steps=12"], **common, output_dir=tmp_path / "full")
    lightning_asyncfl.fit([*SHORT, "checkpoint.every_n_steps=3"], **common, output_dir=tmp_path / "short")

    # Execute
    resumed = lightning_asyncfl.fit([*SHORT, "checkpoint.every_n_steps=3", "server.max_steps=12", "resume=auto"], **common, output_dir=tmp_path / "short")
    other = TensorFederatedData(x.flip(0), y.flip(0), x_test, y_test)
    with pytest.raises(ConfigError) as error:
        lightning_asyncfl.fit([*SHORT, "checkpoint.every_n_steps=3", "server.max_steps=12", "resume=auto"], **{**common, "data": other}, output_dir=tmp_path / "short")

    # Assert
    assert resumed.summary["steps"] == 12 and resumed.summary["continuation"]["identical"]
    assert all(torch.equal(full.state_dict[k], v) for k, v in resumed.state_dict.items())
    assert [row["version"] for row in resumed.history] == [row["version"] for row in full.history]
    assert "data.sha256: the checkpoint's run has" in str(error.value)


def test_fit_takes_index_lists_with_the_configs_data_and_a_list_of_callbacks(tmp_path):
    # Prepare
    seen: list[int] = []

    class Versions(lightning_asyncfl.Callback):
        def on_aggregate(self, loop, updates, version):
            seen.append(version)

    lists = [list(range(k, 40 * 4, 4)) for k in range(4)]  # 40 training rows each (digits: 1,293 after the test and validation splits)

    # Execute
    result = lightning_asyncfl.fit([*SHORT, "data.num_clients=4"], partition=lists, callbacks=[Versions()], output_dir=tmp_path)

    # Assert
    assert seen == [1, 2, 3, 4, 5, 6]
    assert [u["num_samples"] for u in result.updates] == [40] * len(result.updates)
    assert result.config.partition["_given_"] == "lightning_asyncfl.data.given.Given"


def test_to_pandas_gives_the_history_and_the_updates(tmp_path):
    pd = pytest.importorskip("pandas")

    result = lightning_asyncfl.fit([*SHORT, "data.num_clients=4", "partition=iid"], output_dir=tmp_path)

    assert isinstance(result.to_pandas(), pd.DataFrame)
    assert result.to_pandas()["version"].tolist() == [0, 3, 6]
    assert result.to_pandas("updates")["status"].tolist() == ["accepted"] * result.summary["client_updates"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": nn.Linear(2, 2)}, "model must be a LightningModule (or a class or function making one), got Linear"),
        ({"model": 3}, "model must be a LightningModule, or a class or function that makes one, got int"),
        ({"data": Given(index_lists=[[0]])}, "data must be a lightning_asyncfl.data.FederatedDataModule"),
        ({"partition": [[0, 1], []]}, "partition.index_lists[1] must be a non-empty list of sample indices"),
        ({"callbacks": [object()]}, "callbacks must be lightning_asyncfl.Callback objects, got object"),
    ],
)
def test_fit_names_what_is_wrong_with_a_given_object(kwargs, message, tmp_path):
    with pytest.raises(ConfigError) as error:
        lightning_asyncfl.fit(SHORT, **kwargs, output_dir=tmp_path)

    assert message in str(error.value)


def test_fit_rejects_a_single_string_of_overrides():
    with pytest.raises(TypeError, match=r"got the string 'seed=1'; write \['seed=1'\]"):
        lightning_asyncfl.fit("seed=1")


def test_a_given_data_module_gets_the_runs_partition_and_seed(tmp_path):
    # Prepare
    data = Digits(num_clients=4)

    # Execute
    result = lightning_asyncfl.fit([*SHORT, "seed=2", "partition=iid"], data=data, output_dir=tmp_path)

    # Assert: the same split as the config's own digits with that seed and partition
    reference = lightning_asyncfl.fit([*SHORT, "seed=2", "partition=iid", "data.num_clients=4"], output_dir=tmp_path / "ref")
    assert [u["num_samples"] for u in result.updates] == [u["num_samples"] for u in reference.updates]
    assert all(torch.equal(reference.state_dict[k], v) for k, v in result.state_dict.items())
    assert data.seed == 0 and data.train_dataset is None
