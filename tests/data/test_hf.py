"""Hugging Face datasets (data=hf) and Flower Datasets partitioners (partition=flwr).

Every dataset is built here with ``datasets.Dataset.from_dict`` and written with
``save_to_disk`` into tmp_path: no network. Flower's own partitioner, built in the test
on the same dataset, is the oracle of ``partition=flwr``.
"""

from __future__ import annotations

import csv
import shutil
import sys

import numpy as np
import PIL.Image
import pytest
import torch

datasets = pytest.importorskip("datasets", reason="data=hf is the optional extra lightning-asyncfl[hf]")
flwr_partitioner = pytest.importorskip("flwr_datasets.partitioner", reason="partition=flwr is the optional extra lightning-asyncfl[flwr]")

from lightning_asyncfl.checkpoint import list_checkpoints  # noqa: E402
from lightning_asyncfl.data import Digits, FlowerPartition, HuggingFace, Natural  # noqa: E402
from lightning_asyncfl.data.hf import PAD, UNKNOWN, build_vocabulary, encode_texts, tokenize  # noqa: E402
from lightning_asyncfl.data.report import class_counts  # noqa: E402
from lightning_asyncfl.errors import ConfigError  # noqa: E402
from lightning_asyncfl.run import compose, run  # noqa: E402
from tests.test_checkpoint import _same_run  # noqa: E402
from tests.conftest import SMALL

TINY = ["progress=false", "server.max_steps=4", "server.eval_every=2", "server.scheduler.concurrency=2"]
DIRICHLET = dict(num_partitions=6, partition_by="label", alpha=0.3, min_partition_size=3, self_balancing=False, shuffle=True, seed=7)


def _images(n: int, seed: int, shape=(8, 8)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    labels = (np.arange(n) % 4).astype(np.int64)
    writers = rng.integers(0, 5, n)
    return images, labels, writers


def _image_dict(n: int, seed: int, shape=(8, 8)) -> tuple[object, np.ndarray, np.ndarray]:
    """Images as Hugging Face stores them (an ``Image`` column, PNG bytes) and ``ClassLabel`` labels."""
    images, labels, writers = _images(n, seed, shape)
    ds = datasets.Dataset.from_dict({"img": [PIL.Image.fromarray(a) for a in images], "label": labels.tolist(), "writer": writers.tolist()})
    ds = ds.cast_column("img", datasets.Image()).cast_column("label", datasets.ClassLabel(names=["a", "b", "c", "d"]))
    return ds, images, labels


@pytest.fixture
def image_folder(tmp_path):
    """A DatasetDict (train 160, test 40) of 8x8 grey images saved with save_to_disk."""
    train, train_x, train_y = _image_dict(160, 0)
    test, test_x, test_y = _image_dict(40, 1)
    path = tmp_path / "images"
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(path))
    return path, (train_x, train_y, test_x, test_y)


def _hf(path, **kwargs) -> HuggingFace:
    settings = dict(num_clients=6, path=str(path), feature_column="img", input_shape=[1, 8, 8], num_classes=4, normalize=False)
    settings.update(kwargs)
    dm = HuggingFace(**settings)
    dm.setup()
    return dm


def test_an_image_dataset_saved_to_disk_loads_as_its_pixels_and_labels(image_folder):
    path, (train_x, train_y, test_x, test_y) = image_folder

    dm = _hf(path)

    x, y = dm.train_dataset.tensors
    assert x.dtype == torch.float32 and x.shape == (160, 1, 8, 8)
    np.testing.assert_array_equal((x * 255).round().to(torch.uint8)[:, 0].numpy(), train_x)
    np.testing.assert_array_equal(y.numpy(), train_y)
    np.testing.assert_array_equal(dm.test_dataset.tensors[1].numpy(), test_y)
    np.testing.assert_array_equal((dm.test_dataset.tensors[0] * 255).round().to(torch.uint8)[:, 0].numpy(), test_x)


def test_normalize_uses_the_training_splits_mean_and_std(image_folder):
    path, (train_x, _, test_x, _) = image_folder

    dm = _hf(path, normalize=True)

    pixels = train_x.astype(np.float64) / 255
    expected = (test_x.astype(np.float64) / 255 - pixels.mean()) / pixels.std()
    np.testing.assert_allclose(dm.test_dataset.tensors[0][:, 0].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_colour_images_stored_height_width_channels_become_channels_first(tmp_path):
    images, labels, _ = _images(20, 3, shape=(4, 6, 3))  # nested lists of integers, not an Image column
    datasets.Dataset.from_dict({"img": images.tolist(), "label": labels.tolist()}).save_to_disk(str(tmp_path / "rgb"))

    dm = _hf(tmp_path / "rgb", test_split=None, input_shape=[3, 4, 6], num_clients=2)

    x = (dm.train_dataset.tensors[0] * 255).round().to(torch.uint8)
    assert x.shape[1:] == (3, 4, 6)
    assert len(dm.train_dataset) + len(dm.test_dataset) == 20
    everything = {tuple(img.transpose(2, 0, 1).reshape(-1)) for img in images}
    assert all(tuple(v.reshape(-1).tolist()) in everything for v in x)


def test_one_dataset_without_splits_holds_out_test_fraction_per_class_from_the_seed(tmp_path):
    ds, _, labels = _image_dict(100, 0)
    ds.save_to_disk(str(tmp_path / "one"))

    a, b = _hf(tmp_path / "one", test_split=None, test_fraction=0.2), _hf(tmp_path / "one", test_split=None, test_fraction=0.2)
    other = _hf(tmp_path / "one", test_split=None, test_fraction=0.2, seed=1)

    assert len(a.test_dataset) == 20 and np.bincount(a.test_dataset.tensors[1].numpy()).tolist() == [5, 5, 5, 5]
    assert torch.equal(a.test_dataset.tensors[0], b.test_dataset.tensors[0])
    assert not torch.equal(a.test_dataset.tensors[0], other.test_dataset.tensors[0])
    with pytest.raises(ConfigError, match="data.test_split: .* holds one dataset without splits; set data.test_split=null"):
        _hf(tmp_path / "one")


def test_text_becomes_left_padded_ids_of_the_most_frequent_training_tokens():
    texts = ["The cat sat.", "the dog sat, the end", "a cat"]
    vocab = build_vocabulary(texts, vocab_size=6)

    ids = encode_texts(["the cat ran", "the end of the dog sat"], vocab, length=4)

    assert tokenize("The cat sat.") == ["the", "cat", "sat", "."]
    assert vocab == {"the": 2, "cat": 3, "sat": 4, ",": 5}  # by count, ties alphabetical; 4 = vocab_size - 2 tokens
    assert ids.tolist() == [[PAD, 2, 3, UNKNOWN], [2, UNKNOWN, UNKNOWN, 2]]


def test_a_text_dataset_trains_a_transformer_classifier(tmp_path, make_cfg):
    rng = np.random.default_rng(0)
    words = ["good", "great", "fine", "bad", "awful", "poor", "the", "movie", "was", "plot"]
    texts = [" ".join(rng.choice(words, 6)) for _ in range(80)]
    labels = [int(sum(t.split().count(w) for w in words[:3]) >= sum(t.split().count(w) for w in words[3:6])) for t in texts]
    split = {"text": texts[:60], "label": labels[:60]}, {"text": texts[60:], "label": labels[60:]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(split[0]), "test": datasets.Dataset.from_dict(split[1])}).save_to_disk(str(tmp_path / "text"))

    summary = run(make_cfg(
        "data=hf", f"data.path={tmp_path / 'text'}", "data.feature_column=text", "data.kind=text", "data.input_shape=[8]",
        "data.num_classes=2", "data.num_clients=4", "data.vocab_size=12", "model=transformer", "model.vocab_size=12",
        "model.causal=false", "model.pad_index=0", "model.d_model=16", "model.nhead=2", "model.num_layers=1", "model.dim_feedforward=16", *TINY,
    ))  # fmt: skip

    assert summary["status"] == "completed" and summary["failed"] == 0 and summary["num_clients"] == 4


def test_class_names_are_numbered_in_sorted_order(tmp_path):
    ds = datasets.Dataset.from_dict({"x": [[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [3.0, 1.0]], "y": ["dog", "cat", "dog", "ant"]})
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "named"))

    dm = _hf(tmp_path / "named", feature_column="x", label_column="y", input_shape=[2], num_classes=3, num_clients=2)

    assert dm.label_names == ["ant", "cat", "dog"] and dm.train_dataset.tensors[1].tolist() == [2, 1, 2, 0]
    assert dm.train_dataset.tensors[0].dtype == torch.float32


def test_a_group_column_is_the_natural_partition(image_folder):
    path, _ = image_folder
    writers = np.asarray(datasets.load_from_disk(str(path))["train"]["writer"])

    dm = _hf(path, group_column="writer", num_clients=5, partition=Natural())

    for k in range(5):
        np.testing.assert_array_equal(dm.client_indices[k].numpy(), np.flatnonzero(writers == k))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(feature_column="pixels"), "data.feature_column must be a column of the dataset (img, label, writer), got 'pixels'"),
        (dict(split="training"), "data.split must be one of the dataset's splits (train, test), got 'training'"),
    ],
)
def test_a_wrong_column_or_split_names_what_the_dataset_has(image_folder, kwargs, message):
    path, _ = image_folder
    with pytest.raises(ConfigError) as error:
        _hf(path, **kwargs)
    assert message in str(error.value)


def test_a_path_that_is_no_folder_and_no_reachable_hub_dataset_says_how_to_work_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # read at import: the environment variable is too late
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError) as error:
        _hf("no-such-user/no-such-dataset-here", feature_column="image")
    text = str(error.value)
    assert "data.path: no folder 'no-such-user/no-such-dataset-here' here" in text and "save_to_disk(FOLDER)) and set data.path=FOLDER" in text


def test_missing_extras_name_the_pip_extra(image_folder, make_cfg, monkeypatch):
    path, _ = image_folder
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ConfigError, match=r'data=hf needs the Hugging Face datasets library, which is not installed: pip install "lightning-asyncfl\[hf\]"'):
        run(make_cfg("data=hf", f"data.path={path}"))
    monkeypatch.setitem(sys.modules, "flwr_datasets", None)
    with pytest.raises(ConfigError, match=r'partition=flwr needs Flower Datasets \(flwr-datasets\), which is not installed: pip install "lightning-asyncfl\[flwr\]"'):
        run(make_cfg("partition=flwr"))


# -- Flower partitioners -----------------------------------------------------------------


def _partitioner_config(**overrides) -> dict:
    return {"_target_": "flwr_datasets.partitioner.DirichletPartitioner", **DIRICHLET, **overrides}


def test_client_i_is_exactly_the_partitioners_partition_i(image_folder):
    path, _ = image_folder
    train = datasets.load_from_disk(str(path))["train"]
    oracle = flwr_partitioner.DirichletPartitioner(**DIRICHLET)
    oracle.dataset = train

    dm = _hf(path, partition=FlowerPartition(partitioner=_partitioner_config()))

    x = (dm.train_dataset.tensors[0] * 255).round().to(torch.uint8)[:, 0].numpy()
    for i in range(6):
        part = oracle.load_partition(i)
        rows = dm.client_indices[i].numpy()
        assert len(rows) == len(part)
        # the same rows: the same images (as sets, the partition may be shuffled) and labels
        mine = sorted(map(bytes, x[rows]))
        theirs = sorted(bytes(np.asarray(img, dtype=np.uint8)) for img in part["img"])
        assert mine == theirs
        assert np.bincount(dm.train_dataset.tensors[1][rows].numpy(), minlength=4).tolist() == np.bincount(part["label"], minlength=4).tolist()


def test_a_flower_partitioner_drives_a_run_and_the_report_matches_its_partitions(image_folder, make_cfg, tmp_path):
    # Prepare: Flower's partitioner on the same dataset, the oracle of the report
    path, _ = image_folder
    train = datasets.load_from_disk(str(path))["train"]
    oracle = flwr_partitioner.DirichletPartitioner(**{**DIRICHLET, "seed": 0})  # partition=flwr seeds it with the run's seed
    oracle.dataset = train
    expected = [[len(p), *np.bincount(p["label"], minlength=4).tolist()] for p in (oracle.load_partition(i) for i in range(6))]

    # Execute
    summary = run(make_cfg(
        "data=hf", f"data.path={path}", "data.feature_column=img", "data.input_shape=[1,8,8]", "data.num_classes=4",
        "data.num_clients=6", "partition=flwr", "partition.partitioner.alpha=0.3", "partition.partitioner.min_partition_size=3", *TINY,
        "eval.val_fraction=0",  # Flower's partitions whole: a validation split would take samples out of them
    ))  # fmt: skip

    # Assert
    assert summary["status"] == "completed" and summary["failed"] == 0 and summary["num_clients"] == 6
    with (tmp_path / "run" / "partition.csv").open(newline="") as f:
        rows = [[int(v) for v in row[1:]] for row in list(csv.reader(f))[1:]]
    assert rows == expected


def test_with_other_data_a_flower_partitioner_sees_the_labels(tmp_path):
    digits = Digits(num_clients=5, partition=FlowerPartition(partitioner=_partitioner_config(num_partitions=5, alpha=0.5, min_partition_size=5)))
    digits.setup()
    oracle = flwr_partitioner.DirichletPartitioner(**{**DIRICHLET, "num_partitions": 5, "alpha": 0.5, "min_partition_size": 5})
    oracle.dataset = datasets.Dataset.from_dict({"label": digits.train_targets})

    counts = class_counts(digits)

    assert counts.tolist() == [np.bincount(oracle.load_partition(i)["label"], minlength=10).tolist() for i in range(5)]


def test_a_flower_run_resumed_from_its_checkpoint_gives_the_uninterrupted_bytes(image_folder, make_cfg, tmp_path):
    path, _ = image_folder
    whole = tmp_path / "run"
    overrides = [
        "data=hf", f"data.path={path}", "data.feature_column=img", "data.input_shape=[1,8,8]", "data.num_classes=4",
        "data.num_clients=6", "partition=flwr", "partition.partitioner.min_partition_size=3", *TINY, "server.max_steps=6",
        "checkpoint.every_n_steps=3", "checkpoint.keep_last=10",
    ]  # fmt: skip
    run(make_cfg(*overrides))
    first = [p for _, p in list_checkpoints(whole / "checkpoints")][0]
    copy = tmp_path / "resumed"
    shutil.copytree(whole, copy)

    summary = run(compose([*SMALL, *overrides, f"resume={copy / 'checkpoints' / first.name}"]))  # the same command, resumed

    assert summary["status"] == "completed"
    _same_run(whole, copy)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(_target_="flwr_datasets.partitioner.IidPartitioner"),
         "IidPartitioner does not take partition_by, alpha, min_partition_size, self_balancing, shuffle, seed (remove with ~partition.partitioner.partition_by"),
        (dict(_target_="flwr_datasets.partitioner.ShardPartitioner", alpha=None, min_partition_size=None, self_balancing=None),
         "ShardPartitioner does not take alpha, min_partition_size, self_balancing"),
        (dict(_target_="collections.OrderedDict"), "partition.partitioner._target_ must be a subclass of flwr_datasets.partitioner.Partitioner"),
    ],
)
def test_a_partitioner_config_that_does_not_fit_is_refused_before_training(overrides, message):
    with pytest.raises(ConfigError) as error:
        FlowerPartition(partitioner=_partitioner_config(**overrides))
    assert message in str(error.value)


def test_the_number_of_partitions_must_be_the_number_of_clients(image_folder):
    path, _ = image_folder
    with pytest.raises(ConfigError, match="partition.partitioner gives 6 partitions but data.num_clients is 4: they must be equal"):
        _hf(path, num_clients=4, partition=FlowerPartition(partitioner=_partitioner_config()))
