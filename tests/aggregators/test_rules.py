"""One aggregation step of each rule against a hand computation (values exact in float32)."""

from __future__ import annotations

import pytest
import torch

from lightning_asyncfl.aggregators import FedAsync, FedAvg, FedBuff
from lightning_asyncfl.buffer import UpdateBuffer
from lightning_asyncfl.errors import InvalidValue
from lightning_asyncfl.state import ClientUpdate, Job
from tests.helpers import flat_state


def _update(trained, base, *, staleness=0, num_samples=1, job_id=0):
    job = Job(job_id=job_id, client_id=job_id, base_version=0, seed=0, dispatch_time=0.0, arrival_time=float(job_id))
    return ClientUpdate(job=job, state=flat_state(trained), base=flat_state(base), num_samples=num_samples, staleness=staleness)


def test_fedasync_mixes_with_alpha_times_staleness_weight():
    # alpha_t = 0.5 * (1 + 1)^-1 = 0.25; x = 0.75 * [1, 2, 3, 4] + 0.25 * [3, 2, 1, 0]
    aggregator = FedAsync(alpha=0.5, staleness="polynomial", a=1.0)
    global_state = flat_state([1.0, 2.0, 3.0, 4.0])

    new = aggregator.aggregate(global_state, [_update([3.0, 2.0, 1.0, 0.0], [0.0] * 4, staleness=1)], version=5)

    assert new.flat.tolist() == [1.5, 2.0, 2.5, 3.0]
    assert global_state.flat.tolist() == [1.0, 2.0, 3.0, 4.0]  # not modified in place


def test_fedasync_hinge_inside_and_beyond_b():
    aggregator = FedAsync(alpha=0.5, staleness="hinge", a=1.0, b=2)
    assert aggregator.alpha_t(2) == 0.5
    assert aggregator.alpha_t(5) == 0.5 / 4  # 1 / (1 * (5 - 2) + 1)


def test_fedasync_applies_several_updates_one_after_the_other():
    aggregator = FedAsync(alpha=0.5, staleness="constant")
    updates = [_update([4.0], [0.0], job_id=0), _update([0.0], [0.0], job_id=1)]

    new = aggregator.aggregate(flat_state([2.0]), updates, version=0)

    assert new.flat.tolist() == [1.5]  # (2 + 4) / 2 = 3, then (3 + 0) / 2


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5])
def test_fedasync_alpha_outside_0_1_is_rejected(alpha):
    with pytest.raises(InvalidValue, match=rf"alpha must be a number in \(0, 1\], got {alpha}"):
        FedAsync(alpha=alpha)


def test_fedbuff_averages_staleness_weighted_deltas_and_applies_server_lr():
    # weights s(0) = 1, s(3) = 0.5; mean = (1 * [2, 4] + 0.5 * [4, -8]) / 2 = [2, 0]; w = [1, 1] + 0.5 * [2, 0]
    aggregator = FedBuff(buffer_size=2, server_lr=0.5, staleness="polynomial", a=0.5)
    updates = [_update([3.0, 5.0], [1.0, 1.0], staleness=0, job_id=0), _update([4.0, -7.0], [0.0, 1.0], staleness=3, job_id=1)]

    new = aggregator.aggregate(flat_state([1.0, 1.0]), updates, version=3)

    assert new.flat.tolist() == [2.0, 1.0]


def test_fedbuff_is_ready_at_buffer_size():
    aggregator, buffer = FedBuff(buffer_size=2), UpdateBuffer()
    buffer.push(_update([0.0], [0.0], job_id=0))
    assert not aggregator.ready(buffer)
    buffer.push(_update([0.0], [0.0], job_id=1))
    assert aggregator.ready(buffer)


def test_fedavg_weights_models_by_samples():
    updates = [_update([0.0, 4.0], [9.0, 9.0], num_samples=1, job_id=0), _update([4.0, 0.0], [9.0, 9.0], num_samples=3, job_id=1)]

    weighted = FedAvg(clients_per_round=2).aggregate(flat_state([9.0, 9.0]), updates, version=0)
    plain = FedAvg(clients_per_round=2, weighted=False).aggregate(flat_state([9.0, 9.0]), updates, version=0)

    assert weighted.flat.tolist() == [3.0, 1.0]
    assert plain.flat.tolist() == [2.0, 2.0]


@pytest.mark.parametrize(("make", "key"), [(lambda: FedBuff(server_lr=0), "server_lr"), (lambda: FedBuff(buffer_size=0), "buffer_size"), (lambda: FedAvg(clients_per_round=0), "buffer_size")])
def test_bad_hyperparameters_name_their_key(make, key):
    with pytest.raises(InvalidValue) as info:
        make()
    assert info.value.key == key


def test_aggregators_keep_extras_and_layout_of_the_global_state():
    global_state = flat_state([1.0])
    global_state = type(global_state)(global_state.flat, global_state.layout, {"count": torch.tensor(3)})
    new = FedAsync(alpha=1.0).aggregate(global_state, [_update([2.0], [1.0])], version=0)
    assert new.layout == global_state.layout
    assert int(new.extras["count"]) == 3
