"""The built-in image models: shapes, gradients, input checks, norms and their state layout."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from lightning_asyncfl.client import ClientTrainer
from lightning_asyncfl.errors import InvalidValue, InvalidValues
from lightning_asyncfl.models import ConvNet, LeNet5, ResNet18
from lightning_asyncfl.run import build, compose, run
from lightning_asyncfl.state import Job, ModelState

DIGITS, MNIST, CIFAR = [1, 8, 8], [1, 28, 28], [3, 32, 32]

CASES = [
    (LeNet5, {}, DIGITS), (LeNet5, {}, MNIST), (LeNet5, {}, CIFAR),
    (ConvNet, {}, DIGITS), (ConvNet, {}, MNIST), (ConvNet, {}, CIFAR),
    (ResNet18, {}, DIGITS), (ResNet18, {}, CIFAR),
    (ResNet18, {"norm": "group"}, CIFAR), (ResNet18, {"cifar_stem": False}, MNIST),
]  # fmt: skip


def _forward_backward(model: nn.Module, shape: list[int], batch: int = 2, classes: int = 10) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *shape, generator=g)
    y = torch.randint(0, classes, (batch,), generator=g)
    logits = model(x)
    F.cross_entropy(logits, y).backward()
    return logits


@pytest.mark.parametrize(("cls", "kwargs", "shape"), CASES, ids=[f"{c.__name__}{''.join(f'-{v}' for v in k.values())}-{'x'.join(map(str, s))}" for c, k, s in CASES])
def test_forward_backward_gives_logits_per_class_and_a_gradient_for_every_parameter(cls, kwargs, shape):
    # Prepare
    torch.manual_seed(0)
    model = cls(input_shape=shape, num_classes=7, **kwargs)

    # Execute
    logits = _forward_backward(model, shape, classes=7)

    # Assert
    assert logits.shape == (2, 7)
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


def test_lenet5_has_the_paper_layer_sizes_and_pads_small_inputs_to_32x32():
    # 28x28 MNIST: S4 holds 16x5x5 features as in the paper; the classic 61,706 weights
    mnist = LeNet5(input_shape=MNIST, num_classes=10)
    digits = LeNet5(input_shape=DIGITS, num_classes=10)
    large = LeNet5(input_shape=[1, 40, 36], num_classes=10)

    linears = [m for m in mnist.net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(400, 120), (120, 84), (84, 10)]
    assert [m.out_channels for m in mnist.net if isinstance(m, nn.Conv2d)] == [6, 16]
    assert sum(p.numel() for p in mnist.parameters()) == 61706
    assert isinstance(digits.net[0], nn.ZeroPad2d) and digits.net[0].padding == (12, 12, 12, 12)
    assert not isinstance(LeNet5(input_shape=CIFAR, num_classes=10).net[0], nn.ZeroPad2d)
    assert next(m for m in large.net if isinstance(m, nn.Linear)).in_features == 16 * 7 * 6  # (40-4)/2-4)/2, (36-4)/2-4)/2
    assert sum(isinstance(m, nn.ReLU) for m in mnist.net) == 4 and not any(isinstance(m, nn.Tanh) for m in mnist.net)
    assert sum(isinstance(m, nn.MaxPool2d) for m in mnist.net) == 2


def test_convnet_is_fedavgs_cifar_cnn():
    model = ConvNet(input_shape=CIFAR, num_classes=10)

    linears = [m for m in model.net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64 * 8 * 8, 384), (384, 192), (192, 10)]
    assert [(m.out_channels, m.kernel_size) for m in model.net if isinstance(m, nn.Conv2d)] == [(64, (5, 5)), (64, (5, 5))]
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in model.net)
    with_lrn = ConvNet(input_shape=CIFAR, num_classes=10, local_response_norm=True)
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in with_lrn.net) == 2
    assert sum(p.numel() for p in with_lrn.parameters()) == sum(p.numel() for p in model.parameters())


BAD_SHAPES = [(LeNet5, [784]), (LeNet5, [28, 28]), (ConvNet, [784]), (ConvNet, [1, 2, 8, 8]), (ResNet18, [3, 32])]


@pytest.mark.parametrize(("cls", "shape"), BAD_SHAPES, ids=[f"{c.__name__}-{s}" for c, s in BAD_SHAPES])
def test_input_shape_that_is_not_an_image_raises_invalid_value_naming_input_shape(cls, shape):
    with pytest.raises(InvalidValue) as info:
        cls(input_shape=shape, num_classes=10)

    assert info.value.key == "input_shape"
    assert str(info.value).startswith("input_shape must be (channels, height, width)")


def test_resnet18_reports_every_bad_key_at_once():
    with pytest.raises(InvalidValues) as info:
        ResNet18(input_shape=[3, 32], num_classes=10, norm="layer", group_norm_groups=3)

    assert [p.key for p in info.value.problems] == ["input_shape", "norm", "group_norm_groups"]
    assert "one of: batch, group" in str(info.value)


def test_resnet18_batch_norm_uses_batchnorm2d_everywhere():
    model = ResNet18(input_shape=CIFAR, num_classes=10, norm="batch")

    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
    assert len(norms) == 20 and all(isinstance(m, nn.BatchNorm2d) for m in norms)


def test_resnet18_group_norm_has_no_batchnorm_and_the_given_groups():
    model = ResNet18(input_shape=CIFAR, num_classes=10, norm="group", group_norm_groups=4)

    groups = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert len(groups) == 20 and {m.num_groups for m in groups} == {4}
    assert not list(model.buffers())


def test_resnet18_stems():
    cifar = ResNet18(input_shape=[1, 32, 32], num_classes=10)
    imagenet = ResNet18(input_shape=CIFAR, num_classes=10, cifar_stem=False)
    imagenet_gray = ResNet18(input_shape=MNIST, num_classes=10, cifar_stem=False)

    assert (cifar.net.conv1.in_channels, cifar.net.conv1.kernel_size, cifar.net.conv1.stride) == (1, (3, 3), (1, 1))
    assert isinstance(cifar.net.maxpool, nn.Identity)
    assert (imagenet.net.conv1.in_channels, imagenet.net.conv1.kernel_size, imagenet.net.conv1.stride) == (3, (7, 7), (2, 2))
    assert isinstance(imagenet.net.maxpool, nn.MaxPool2d)
    assert imagenet_gray.net.conv1.in_channels == 1 and imagenet_gray.net.conv1.kernel_size == (7, 7)
    assert cifar.net.fc.out_features == 10


def test_resnet18_batchnorm_state_puts_running_stats_in_flat_and_counters_in_extras():
    model = ResNet18(input_shape=CIFAR, num_classes=10, norm="batch")

    state = ModelState.from_module(model)

    names = state.layout.names
    assert "net.bn1.running_mean" in names and "net.layer4.1.bn2.running_var" in names
    assert names.index("net.bn1.running_mean") >= state.layout.num_parameters  # buffers follow the parameters
    assert state.layout.size == state.flat.numel() == sum(p.numel() for p in model.parameters()) + 2 * sum(
        m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d)
    )
    assert set(state.extras) == {n for n, _ in model.named_buffers() if n.endswith("num_batches_tracked")}
    assert len(state.extras) == 20 and all(t.dtype == torch.long for t in state.extras.values())
    assert not any(n.endswith("num_batches_tracked") for n in names)


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_resnet18_trains_through_the_client_trainer_with_either_norm(norm):
    # Prepare: 6 digits-shaped samples, batches of 3: two steps
    torch.manual_seed(0)
    model = ResNet18(input_shape=DIGITS, num_classes=10, norm=norm, lr=0.05)
    base = ModelState.from_module(model)
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.rand(6, *DIGITS, generator=g), torch.randint(0, 10, (6,), generator=g))
    trainer = ClientTrainer(copy.deepcopy(model), data, [torch.arange(6)], batch_size=3)

    # Execute
    result = trainer.train(Job(0, 0, 0, seed=5, dispatch_time=0.0, arrival_time=1.0), base)
    trained, metrics = result.state, result.metrics

    # Assert
    assert trained.layout == base.layout
    assert torch.isfinite(trained.flat).all()
    assert not torch.equal(trained.parameters, base.parameters)
    assert set(metrics) == {"loss"}
    if norm == "batch":
        assert not torch.equal(trained.flat[base.layout.parameter_size :], base.flat[base.layout.parameter_size :])
        assert {int(t) for t in trained.extras.values()} == {2}
    else:
        assert base.layout.parameter_size == base.layout.size and not trained.extras


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_resnet18_runs_end_to_end_from_the_real_config(norm, tmp_path):
    # Prepare: digits (1x8x8) through the CIFAR stem; 60 IID clients of about 24 samples, two in flight
    cfg = compose([
        f"output_dir={tmp_path}", "progress=false", "model=resnet18", f"model.norm={norm}",
        "server.max_steps=2", "server.eval_every=1", "server.scheduler.concurrency=2",
        "data.num_clients=60", "partition=iid", "client.batch_size=8",
    ])  # fmt: skip
    initial = build(cfg)["model"].state_dict()

    # Execute
    summary = run(cfg)

    # Assert
    assert summary["stop_reason"] == "max_steps" and summary["applied"] == 2
    assert 0.0 <= summary["final_accuracy"] <= 1.0
    final = torch.load(tmp_path / "final_model.pt", weights_only=True)
    assert set(final) == set(initial)
    assert not torch.equal(final["net.fc.weight"], initial["net.fc.weight"])
    if norm == "batch":  # running stats were aggregated; the counters stayed the global's own (0)
        assert not torch.equal(final["net.bn1.running_mean"], initial["net.bn1.running_mean"])
        assert all(int(v) == 0 for k, v in final.items() if k.endswith("num_batches_tracked"))
    else:
        assert not any(k.endswith(("running_mean", "num_batches_tracked")) for k in final)


def test_models_pickle_for_process_executors():
    import pickle

    model = ResNet18(input_shape=DIGITS, num_classes=10, norm="group")

    again = pickle.loads(pickle.dumps(model))

    assert isinstance(again, ResNet18) and torch.equal(again.net.fc.weight, model.net.fc.weight)
