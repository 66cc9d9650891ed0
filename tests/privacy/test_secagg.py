"""Secure aggregation: the masked sum is the exact fixed-point sum, dropouts are unmasked, the
aggregator receives no individual update."""

from __future__ import annotations

import pytest
import torch

from lightning_asyncfl.aggregators import FedAsync, FedBuff
from lightning_asyncfl.context import SetupContext
from lightning_asyncfl.privacy import SecureAggregation, TopK, UploadChannel
from lightning_asyncfl.privacy.channel import TOO_FEW_SURVIVORS
from lightning_asyncfl.privacy.secagg import exchange_bytes
from lightning_asyncfl.state import ClientUpdate, Job, Layout, ModelState


def _state(values: torch.Tensor) -> ModelState:
    return ModelState(values, Layout.from_tensors({"w": values}, num_parameters=1))


def _update(job_id: int, client: int, delta: torch.Tensor, staleness: int = 0) -> ClientUpdate:
    job = Job(job_id=job_id, client_id=client, base_version=0, seed=job_id, dispatch_time=0.0, arrival_time=1.0)
    return ClientUpdate(job=job, state=_state(delta.clone()), base=_state(torch.zeros_like(delta)), num_samples=10, staleness=staleness)


class Spy(FedBuff):
    """FedBuff that keeps every delta it was given."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen: list[torch.Tensor] = []

    def aggregate(self, global_state, updates, version):
        self.seen += [u.delta.clone() for u in updates] + [(u.state.flat - u.base.flat).clone() for u in updates]
        return super().aggregate(global_state, updates, version)


def test_unmasked_sum_is_the_exact_fixed_point_sum_with_dropouts():
    # Prepare: 5 inputs, 2 members of the cohort dropped after the masks were fixed
    secagg = SecureAggregation(ring_bits=40, fractional_bits=16, threshold=0.5)
    gen = torch.Generator().manual_seed(0)
    inputs = {j: torch.randn(1000, generator=gen, dtype=torch.float64) for j in (3, 5, 8, 9, 12)}

    # Execute
    total = secagg.secure_sum(inputs, dropped=[4, 10])

    # Assert: exactly the decoded sum of the encoded inputs, and within K·2^-f of the real sum
    exact = sum(secagg.encode(x, 5) for x in inputs.values()) % secagg.modulus
    assert torch.equal(total, secagg.decode(exact))
    assert float((total - sum(inputs.values())).abs().max()) <= 5 * 2.0**-17
    # every masked input differs from the encoded one, and a partial sum reveals nothing like the sum
    for y, x in zip(secagg.last_received, inputs.values()):
        assert float((secagg.decode(y) - x).abs().mean()) > 1e3
    assert float((secagg.decode(sum(secagg.last_received[:4]) % secagg.modulus) - sum(list(inputs.values())[:4])).abs().mean()) > 1e3


def test_too_few_survivors_cannot_unmask():
    secagg = SecureAggregation(threshold=0.6)
    assert secagg.secure_sum({1: torch.ones(3), 2: torch.ones(3)}, dropped=[3, 4]) is None  # 2 of 4 < ceil(0.6 * 4) = 3


def test_the_aggregator_receives_only_the_masked_mean_and_equals_fedbuff():
    # Prepare: FedBuff K = 4 with polynomial staleness, one cohort member dropped out
    gen = torch.Generator().manual_seed(1)
    deltas = [torch.randn(200, generator=gen) for _ in range(4)]
    updates = [_update(j, j, d, staleness=j) for j, d in enumerate(deltas)]
    spy = Spy(buffer_size=4, staleness="polynomial", a=0.5)
    channel = UploadChannel(secagg=SecureAggregation())
    channel.setup(SetupContext.of([10] * 6, 0), spy)
    channel.on_dropout(None, Job(job_id=9, client_id=5, base_version=0, seed=9, dispatch_time=0.0, arrival_time=1.0))
    glob = _state(torch.randn(200, generator=gen))

    # Execute
    out = channel.aggregate(spy, glob, updates, 0)

    # Assert: what the aggregator saw is the mean, never one client's delta; the result is FedBuff's
    mean = sum(spy.staleness.weight(u.staleness) * u.delta for u in updates) / 4
    for seen in spy.seen:
        assert torch.allclose(seen, mean, atol=1e-6)
        assert all(not torch.allclose(seen, d, atol=1e-3) for d in deltas)
    assert torch.allclose(out.flat, FedBuff(buffer_size=4, staleness="polynomial", a=0.5).aggregate(glob, updates, 0).flat, atol=1e-6)
    assert channel._dropped == []  # the cohort is closed


def test_a_dropout_beyond_the_threshold_refuses_the_aggregation():
    channel = UploadChannel(secagg=SecureAggregation(threshold=1.0))
    channel.setup(SetupContext.of([10] * 3, 0), FedBuff(buffer_size=2))
    channel.on_dropout(None, Job(job_id=7, client_id=2, base_version=0, seed=7, dispatch_time=0.0, arrival_time=1.0))
    updates = [_update(j, j, torch.ones(3)) for j in range(2)]
    assert channel.aggregate(FedBuff(buffer_size=2), _state(torch.zeros(3)), updates, 0) == TOO_FEW_SURVIVORS


def test_upload_bytes_are_the_masked_vector_and_the_key_exchange():
    channel = UploadChannel(secagg=SecureAggregation(ring_bits=48))
    channel.setup(SetupContext.of([10] * 5, 0), FedBuff(buffer_size=5))
    # 1000 coordinates at 6 bytes; keys 2·32 + 5·2·32, shares 2·4·(2·36 + 28), unmasking 4·36
    assert exchange_bytes(5) == 64 + 320 + 800 + 144
    assert channel.model_upload_bytes(_state(torch.zeros(1000))) == 6000 + exchange_bytes(5)


@pytest.mark.parametrize(
    ("aggregator", "compression", "message"),
    [
        (FedAsync(), None, "secagg must be used with a FedBuff aggregator"),
        (FedBuff(buffer_size=4, rule="median"), None, "secagg must be used with a FedBuff aggregator"),
        (FedBuff(buffer_size=4), TopK(), "secagg must be used without compression"),
    ],
)
def test_secagg_refuses_what_it_cannot_sum(aggregator, compression, message):
    channel = UploadChannel(secagg=SecureAggregation(), compression=compression)
    with pytest.raises(ValueError, match=message):
        channel.setup(SetupContext.of([10] * 4, 0), aggregator)
