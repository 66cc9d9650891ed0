"""BatchNorm running statistics are aggregated like the weights; its counters never are.

Two clients train a small BatchNorm model from one base through the real ClientTrainer;
the aggregators' results are checked against the rules computed by hand, tensor by tensor,
on the ``as_dict()`` views.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.data import TensorDataset

from lightning_asyncfl.aggregators import FedAsync, FedAvg
from lightning_asyncfl.client import ClientTrainer
from lightning_asyncfl.models import ClassifierModule
from lightning_asyncfl.state import ClientUpdate, Job, ModelState

STATS = ("net.1.running_mean", "net.1.running_var")
COUNTER = "net.1.num_batches_tracked"


class SmallBatchNorm(ClassifierModule):
    """Conv 3x3 -> BatchNorm2d -> ReLU -> global average pool -> linear, on 1x8x8 images."""

    def __init__(self, **kwargs) -> None:
        super().__init__(input_shape=[1, 8, 8], num_classes=3, lr=0.1, **kwargs)
        self.net = nn.Sequential(
            nn.Conv2d(1, 4, kernel_size=3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
        )


def _two_client_updates() -> tuple[ModelState, list[ClientUpdate]]:
    """The base (its counter at 7) and the updates of client 0 (12 samples) and client 1 (20 samples)."""
    torch.manual_seed(0)
    template = SmallBatchNorm()
    template.net[1].num_batches_tracked.fill_(7)
    base = ModelState.from_module(template)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, 8, 8, generator=g)
    x[12:] = 2.0 * x[12:] + 1.0  # client 1's inputs have another mean and spread: different running stats
    data = TensorDataset(x, torch.randint(0, 3, (32,), generator=g))
    indices = [torch.arange(12), torch.arange(12, 32)]
    trainer = ClientTrainer(copy.deepcopy(template), data, indices, batch_size=4)
    updates = []
    for k in (0, 1):
        job = Job(job_id=k, client_id=k, base_version=0, seed=10 + k, dispatch_time=0.0, arrival_time=1.0 + k)
        result = trainer.train(job, base)
        state, metrics = result.state, result.metrics
        updates.append(ClientUpdate(job=job, state=state, base=base, num_samples=len(indices[k]), metrics=metrics))
    return base, updates


def test_clients_running_stats_differ_and_their_counters_count_their_own_steps():
    base, (a, b) = _two_client_updates()

    for name in STATS:
        assert not torch.equal(a.state.as_dict()[name], base.as_dict()[name])
        assert not torch.equal(a.state.as_dict()[name], b.state.as_dict()[name])
    assert (int(base.extras[COUNTER]), int(a.state.extras[COUNTER]), int(b.state.extras[COUNTER])) == (7, 10, 12)


def test_fedavg_gives_the_sample_weighted_average_of_running_stats_and_keeps_the_global_counter():
    # Prepare
    base, (a, b) = _two_client_updates()

    # Execute
    new = FedAvg(clients_per_round=2).aggregate(base, [a, b], version=0)

    # Assert: every floating tensor, running stats included, is (12 w_a + 20 w_b) / 32
    got, wa, wb = new.as_dict(), a.state.as_dict(), b.state.as_dict()
    for name in (*STATS, "net.1.weight", "net.0.weight"):
        expected = (12.0 * wa[name] + 20.0 * wb[name]) / 32.0
        torch.testing.assert_close(got[name], expected, rtol=1e-6, atol=1e-7)
    assert (got["net.1.running_var"] > 0).all()
    assert set(new.extras) == {COUNTER}
    assert int(new.extras[COUNTER]) == 7  # the global's own, neither 10 nor 12 nor their mean
    assert new.extras[COUNTER].dtype == torch.long


def test_fedasync_mixes_running_stats_with_alpha_t_like_the_weights():
    # Prepare: the global is version 1 (FedAvg of both); client 0's update is one version stale
    base, (a, b) = _two_client_updates()
    global_state = FedAvg(clients_per_round=2).aggregate(base, [a, b], version=0)
    a.staleness = 1
    fedasync = FedAsync(alpha=0.6, staleness="polynomial", a=0.5)
    alpha_t = 0.6 * (1 + 1) ** -0.5

    # Execute
    new = fedasync.aggregate(global_state, [a], version=1)

    # Assert: x_t = (1 - alpha_t) x_{t-1} + alpha_t x_new for running stats and weights alike
    assert abs(fedasync.alpha_t(1) - alpha_t) < 1e-12
    got, old, client = new.as_dict(), global_state.as_dict(), a.state.as_dict()
    for name in (*STATS, "net.1.weight", "net.5.weight"):
        expected = (1.0 - alpha_t) * old[name] + alpha_t * client[name]
        torch.testing.assert_close(got[name], expected, rtol=1e-6, atol=1e-7)
        assert not torch.equal(got[name], old[name])
    assert int(new.extras[COUNTER]) == 7
