"""Datasets name their default model in conf/data (Hydra defaults); ``model=...`` still wins."""

from __future__ import annotations

import pytest

from lightning_asyncfl.run import compose

#: data option -> the model its YAML selects
DEFAULTS = {
    "digits": "MLP", "synthetic": "MLP", "mnist": "CNN", "fashion_mnist": "CNN", "emnist": "CNN", "femnist": "CNN",
    "cifar10": "ConvNet", "cifar100": "ConvNet", "svhn": "ConvNet", "shakespeare": "CharLSTM",
}  # fmt: skip


@pytest.mark.parametrize("data, model", DEFAULTS.items())
def test_a_dataset_brings_its_model(data, model):
    cfg = compose([f"data={data}"])
    assert cfg.model._target_ == f"lightning_asyncfl.models.{model}"


def test_the_readmes_cifar10_command_picks_fedavgs_cifar_cnn_not_the_mlp():
    cfg = compose(["server=fedasync", "data=cifar10"])
    assert cfg.model._target_ == "lightning_asyncfl.models.ConvNet"
    assert list(cfg.model.input_shape) == [3, 32, 32] and cfg.model.num_classes == 10


@pytest.mark.parametrize("order", ["model first", "data first"])
@pytest.mark.parametrize("data, model, target", [("cifar10", "resnet18", "ResNet18"), ("shakespeare", "transformer", "Transformer"), ("femnist", "mlp", "MLP")])
def test_a_model_on_the_command_line_wins_in_either_order(data, model, target, order):
    overrides = [f"model={model}", f"data={data}"] if order == "model first" else [f"data={data}", f"model={model}"]
    cfg = compose(overrides)
    assert cfg.model._target_ == f"lightning_asyncfl.models.{target}"


def test_a_dataset_keeps_its_default_partition_and_an_explicit_one_wins():
    assert compose(["data=femnist"]).partition._target_ == "lightning_asyncfl.data.Natural"
    assert compose(["data=shakespeare", "partition=iid"]).partition._target_ == "lightning_asyncfl.data.IID"
