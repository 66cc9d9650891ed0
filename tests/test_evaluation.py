"""Evaluation a reviewer accepts: a validation split no client trains on, per-client metrics, the target on either split."""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import Subset, TensorDataset

from lightning_asyncfl import seeding
from lightning_asyncfl.client import Evaluator
from lightning_asyncfl.data.datamodule import stratified_split
from lightning_asyncfl.errors import ConfigError
from lightning_asyncfl.evaluation import ClientEvaluator, client_statistics
from lightning_asyncfl.models import MLP
from lightning_asyncfl.run import build, run
from lightning_asyncfl.state import ModelState
from tests.conftest import SMALL

PARTITIONS = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "partition").glob("*.yaml"))


def _data(make_cfg, *overrides: str):
    return build(make_cfg(*overrides))["data"]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.parametrize("partition", PARTITIONS)
def test_the_validation_split_is_disjoint_from_every_client_and_from_the_test_set(partition, make_cfg, tmp_path):
    # Prepare: natural needs a dataset with natural owners (synthetic); the others take digits
    dataset = "synthetic" if partition == "natural" else "digits"
    extra = ["data.num_clients=10"] + (["partition.labels_per_client=3"] if partition == "labels_per_client" else [])
    if partition == "quantity_skew":
        extra += ["partition.min_samples=20", "partition.max_samples=60"]
    if partition == "given":  # every training digit (1438 of the 1797), dealt round robin to the 10 clients
        lists = tmp_path / "lists.json"
        lists.write_text(json.dumps([list(range(k, 1438, 10)) for k in range(10)]))
        extra += [f"partition.file={lists}"]

    # Execute
    data = _data(make_cfg, f"data={dataset}", f"partition={partition}", "eval.val_fraction=0.2", "partition.client_test_fraction=0.25", *extra)

    # Assert: val, each client's training part and each client's test part are pairwise disjoint indices of the training set
    val = data.val_indices.numpy()
    owned = [data.client_indices[k].numpy() for k in range(data.num_clients)] + [t.numpy() for t in data.client_test_indices]
    everything = np.concatenate([val, *owned])
    assert len(np.unique(everything)) == len(everything)
    assert everything.min() >= 0 and everything.max() < len(data.train_dataset)
    assert data.client_test_source is data.train_dataset
    targets = data.train_targets
    for c in np.unique(targets):  # stratified: each class sends round(0.2 n_c) samples (at most n_c - 1)
        n_c = int((targets == c).sum())
        assert int((targets[val] == c).sum()) == min(round(0.2 * n_c), n_c - 1)
    # the validation samples are training samples, none of them in the test set
    assert torch.equal(data.val_dataset.tensors[0], data.train_dataset.tensors[0][data.val_indices])
    if dataset == "digits":  # the test set is carved from the same pool: map back to the pool's indices
        _, y = load_digits(return_X_y=True)
        pool_train, pool_test = stratified_split(y, 0.2, seeding.stream(0, seeding.PARTITION, 1))
        assert not set(pool_train[val]) & set(pool_test)
    else:
        test_rows = {tuple(row) for row in data.test_dataset.tensors[0].numpy()}
        assert not any(tuple(row) in test_rows for row in data.val_dataset.tensors[0].numpy())


def test_without_a_validation_split_the_partition_is_the_one_before(make_cfg):
    # Prepare
    data = _data(make_cfg, "eval.val_fraction=0")

    # Execute: the partition called directly on the whole training set with the partition stream
    expected = data.partition(data.train_targets, data.num_clients, seeding.stream(0, seeding.PARTITION))

    # Assert
    assert data.val_indices is None and data.val_dataset is None and data.client_test_indices is None
    assert [p.tolist() for p in data.client_indices] == [e.tolist() for e in expected]


def test_each_client_test_part_comes_from_its_own_data_and_its_own_stream(make_cfg):
    # Prepare
    whole = _data(make_cfg, "partition.client_test_fraction=0")

    # Execute
    split = _data(make_cfg, "partition.client_test_fraction=0.3")

    # Assert
    for k in range(whole.num_clients):
        own = whole.client_indices[k].numpy()
        order = seeding.stream(0, seeding.CLIENT_TEST, k).permutation(own)
        n_test = min(round(0.3 * len(own)), len(own) - 1)
        assert split.client_test_indices[k].tolist() == sorted(order[:n_test].tolist())
        assert split.client_indices[k].tolist() == sorted(order[n_test:].tolist())
        assert split.num_samples[k] == len(own) - n_test


def _model(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP(input_shape=[4], num_classes=3, hidden=[8])


def test_per_client_metrics_equal_a_direct_computation_on_a_small_case():
    # Prepare: 4 clients of 0, 1, 5 and 9 samples in a shared pool of 20
    g = torch.Generator().manual_seed(3)
    source = TensorDataset(torch.randn(20, 4, generator=g), torch.randint(0, 3, (20,), generator=g))
    indices = [torch.tensor([], dtype=torch.long), torch.tensor([7]), torch.tensor([0, 3, 4, 11, 19]), torch.tensor([1, 2, 5, 6, 8, 9, 10, 12, 13])]
    model = _model()
    state = ModelState.from_module(model)
    evaluator = ClientEvaluator(copy.deepcopy(model), source, indices, batch_size=4, threshold=0.5)  # batches cut across clients

    # Execute
    per_client = evaluator.per_client(state)
    stats = evaluator(state, version=7)

    # Assert: each client's loss and accuracy are the model's validation_step on that client's samples alone
    assert per_client["num_samples"].tolist() == [0, 1, 5, 9]
    assert math.isnan(per_client["loss"][0]) and math.isnan(per_client["accuracy"][0])
    for k in (1, 2, 3):
        direct = Evaluator(copy.deepcopy(model), Subset(source, indices[k].tolist()), batch_size=100).evaluate(state)
        assert per_client["accuracy"][k] == pytest.approx(direct["test_accuracy"], abs=1e-7)  # torchmetrics: float32
        assert per_client["loss"][k] == pytest.approx(direct["test_loss"], rel=1e-6)
    # ... and the summary columns are the plain numpy statistics of the three clients with data
    accuracy, loss, n = per_client["accuracy"][1:], per_client["loss"][1:], np.array([1, 5, 9])
    assert stats["clients_evaluated"] == 3
    assert stats["client_accuracy_mean"] == pytest.approx(accuracy.mean())
    assert stats["client_accuracy_weighted_mean"] == pytest.approx((accuracy * n).sum() / 15)
    assert stats["client_accuracy_std"] == pytest.approx(np.std(accuracy))
    assert stats["client_accuracy_worst10"] == accuracy.min() and stats["client_accuracy_best10"] == accuracy.max()  # ceil(0.3) = 1 client
    assert stats["client_loss_worst10"] == loss.max() and stats["client_loss_best10"] == loss.min()
    assert stats["client_accuracy_above"] == pytest.approx((accuracy >= 0.5).mean())
    assert evaluator.last[0] == 7


def test_the_worst_and_best_ten_percent_average_the_tail_clients():
    accuracy = np.arange(20) / 20  # 0, 0.05, ..., 0.95: 20 clients, the tails are 2 clients each
    stats = client_statistics({"num_samples": np.full(20, 10), "accuracy": accuracy, "loss": 1 - accuracy}, threshold=0.5)

    assert stats["client_accuracy_worst10"] == pytest.approx((0.0 + 0.05) / 2)
    assert stats["client_accuracy_best10"] == pytest.approx((0.9 + 0.95) / 2)
    assert stats["client_loss_worst10"] == pytest.approx((1.0 + 0.95) / 2)
    assert stats["client_accuracy_above"] == 0.5  # 0.5, 0.55, ..., 0.95


def test_a_run_writes_per_client_vectors_and_their_summary_columns(make_cfg):
    # Prepare
    cfg = make_cfg("eval.clients_every=6", "partition.client_test_fraction=0.25", "server.max_steps=9", "server.eval_every=3")
    out = Path(cfg.output_dir)

    # Execute
    summary = run(cfg)

    # Assert: per-client evaluation at versions 0, 6 and at the end (9); the csv columns are the vectors' statistics
    metrics = {int(row["version"]): row for row in _rows(out / "metrics.csv")}
    assert sorted(metrics) == [0, 3, 6, 9]
    clients = _rows(out / "client_metrics.csv")
    assert sorted({int(r["version"]) for r in clients}) == [0, 6, 9]
    for version in (0, 6, 9):
        rows = [r for r in clients if int(r["version"]) == version]
        assert [int(r["client_id"]) for r in rows] == list(range(20))
        vectors = {k: np.array([float(r[k]) for r in rows]) for k in ("num_samples", "accuracy", "loss")}
        expected = client_statistics(vectors, threshold=0.5)
        assert {k: float(metrics[version][k]) for k in expected} == pytest.approx(expected, rel=1e-12)
    assert metrics[3]["client_accuracy_mean"] == ""  # not a per-client version
    final = json.loads((out / "summary.json").read_text())["final_client_metrics"]
    assert final["version"] == 9 and final["client_accuracy_mean"] == pytest.approx(float(metrics[9]["client_accuracy_mean"]))
    assert summary["final_val_accuracy"] == float(metrics[9]["val_accuracy"])
    assert summary["best_val_accuracy"] == max(float(r["val_accuracy"]) for r in metrics.values())
    assert (out / "client_accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_the_target_watches_the_validation_split_by_default_and_the_test_set_when_asked(make_cfg):
    # Execute
    by_val = run(make_cfg("server.target_accuracy=0.3", "server.max_steps=60", "server.eval_every=3", name="val"))
    by_test = run(make_cfg("server.target_accuracy=0.3", "server.target_metric=test_accuracy", "server.max_steps=60", "server.eval_every=3", name="test"))

    # Assert: each stops at the first evaluation whose watched metric reaches the target
    for summary, key in ((by_val, "val_accuracy"), (by_test, "test_accuracy")):
        rows = _rows(Path(summary["output_dir"]) / "metrics.csv")
        reached = [i for i, row in enumerate(rows) if float(row[key]) >= 0.3]
        assert summary["stop_reason"] == "target_accuracy"
        assert reached and reached[0] == len(rows) - 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["eval.clients_every=6"], "eval.clients_every=6 needs each client's own test data: set partition.client_test_fraction"),
        (["eval.clients_every=4", "partition.client_test_fraction=0.2"], "eval.clients_every must be null or a positive multiple of server.eval_every (6), got 4"),
        (["eval.val_fraction=1.0"], "eval.val_fraction must be in [0, 1), got 1.0"),
        (["partition.client_test_fraction=-0.1"], "partition.client_test_fraction must be in [0, 1), got -0.1"),
        (["eval.val_fraction=0", "server.target_accuracy=0.5"], "server.target_metric=val_accuracy needs a validation split"),
        (["server.target_metric=train_accuracy"], "server.target_metric must be one of: val_accuracy, test_accuracy, got 'train_accuracy'"),
        (["figures.participation_order=random"], "figures.participation_order must be one of: id, speed, got 'random'"),
    ],
)  # fmt: skip
def test_bad_evaluation_settings_fail_before_training_naming_the_key(overrides, message, make_cfg):
    with pytest.raises(ConfigError) as error:
        build(make_cfg(*overrides))

    assert any(message in problem for problem in error.value.problems), error.value.problems


def test_a_resumed_run_writes_the_same_per_client_file(make_cfg, tmp_path):
    import shutil

    from lightning_asyncfl.checkpoint import list_checkpoints
    from lightning_asyncfl.run import compose

    # Prepare: the whole run, a checkpoint every 4 versions, per-client evaluation every 6
    whole = tmp_path / "run"
    overrides = ["eval.clients_every=6", "partition.client_test_fraction=0.25", "checkpoint.every_n_steps=4", "checkpoint.keep_last=100"]
    run(make_cfg(*overrides))
    middle = [p for _, p in list_checkpoints(whole / "checkpoints")][1]  # version 8: after the per-client evaluation at 6
    copy = tmp_path / "resumed"
    shutil.copytree(whole, copy)

    # Execute
    run(compose([*SMALL, *overrides, f"resume={copy / 'checkpoints' / middle.name}"]))  # the same command, resumed

    # Assert
    assert (copy / "client_metrics.csv").read_bytes() == (whole / "client_metrics.csv").read_bytes()
    assert sorted({int(r["version"]) for r in _rows(copy / "client_metrics.csv")}) == [0, 6, 12]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]  # noqa: E731
    assert strip(_rows(copy / "metrics.csv")) == strip(_rows(whole / "metrics.csv"))
