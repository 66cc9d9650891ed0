"""User-level DP: clipping, calibrated noise, the accountant against Opacus called directly."""

from __future__ import annotations

import pytest
import torch
from opacus.accountants import RDPAccountant

from lightning_asyncfl.aggregators import CA2FL, AsyncFedED, FedAdam, FedAvg, FedBuff, Scaffold
from lightning_asyncfl.context import SetupContext
from lightning_asyncfl.errors import InvalidValues
from lightning_asyncfl.privacy import UploadChannel, UserLevelAccountant, UserLevelDP, clip_to_norm, rdp_epsilon
from lightning_asyncfl.privacy.channel import BUDGET_SPENT, coefficient
from lightning_asyncfl.state import ClientUpdate, Job, Layout, ModelState


def _state(values: torch.Tensor) -> ModelState:
    return ModelState(values, Layout.from_tensors({"w": values}, num_parameters=1))


def _update(job_id: int, client: int, trained: torch.Tensor, staleness: int = 0, samples: int = 10) -> ClientUpdate:
    job = Job(job_id=job_id, client_id=client, base_version=0, seed=job_id, dispatch_time=0.0, arrival_time=1.0)
    return ClientUpdate(job=job, state=_state(trained), base=_state(torch.zeros_like(trained)), num_samples=samples, staleness=staleness)


def _opacus(history: list[tuple[float, int]], delta: float) -> float:
    accountant = RDPAccountant()
    for sigma, steps in history:
        for _ in range(steps):
            accountant.step(noise_multiplier=sigma, sample_rate=1.0)
    return accountant.get_epsilon(delta=delta)


def test_clip_to_norm_exact_values():
    assert torch.equal(clip_to_norm(torch.tensor([3.0, 4.0]), 1.0), torch.tensor([0.6, 0.8]))
    x = torch.tensor([0.3, 0.4])
    assert clip_to_norm(x, 1.0) is x and clip_to_norm(x, None) is x


def test_clipped_norms_never_exceed_c_in_either_mode():
    gen = torch.Generator().manual_seed(0)
    for mode in ("central", "local"):
        channel = UploadChannel(dp=UserLevelDP(mode=mode, clip_norm=0.5, noise_multiplier=0.0 if mode == "central" else 1.0))
        for job in range(200):
            trained = torch.randn(300, generator=gen) * float(torch.rand(1, generator=gen) * 3)
            received = channel.on_upload(_update(job, job % 7, trained))
            if mode == "central":
                assert float(torch.linalg.vector_norm(received.delta)) <= 0.5 * (1 + 1e-6)
        assert channel.max_norm <= 0.5


def test_noise_zero_and_no_clip_is_the_plain_aggregation_bit_for_bit():
    # Prepare
    gen = torch.Generator().manual_seed(0)
    updates = [_update(j, j, torch.randn(100, generator=gen), staleness=j % 3) for j in range(5)]
    dp = UserLevelDP(mode="central", clip_norm=None, noise_multiplier=0.0)
    channel, aggregator = UploadChannel(dp=dp), FedBuff(buffer_size=5)
    channel.setup(SetupContext.of([10] * 5, 0), aggregator)
    glob = _state(torch.randn(100, generator=gen))

    # Execute
    received = [channel.on_upload(u) for u in updates]
    private = channel.aggregate(aggregator, glob, received, 0)

    # Assert
    assert all(r is u for r, u in zip(received, updates))
    assert torch.equal(private.flat, aggregator.aggregate(glob, updates, 0).flat)


def test_central_noise_has_std_z_c_times_the_largest_coefficient():
    # Prepare: FedBuff K = 4, η = 1, constant staleness: c_i = 1/K; zero deltas, so the aggregate is the noise
    z, c, k, d = 2.0, 0.5, 4, 20_000
    aggregator = FedBuff(buffer_size=k, staleness="constant")
    channel = UploadChannel(dp=UserLevelDP(mode="central", clip_norm=c, noise_multiplier=z))
    channel.setup(SetupContext.of([10] * k, 3), aggregator)
    updates = [_update(j, j, torch.zeros(d)) for j in range(k)]

    # Execute
    out = channel.aggregate(aggregator, _state(torch.zeros(d)), updates, 0)

    # Assert: std z·C/K within 3% (d = 20000 draws)
    assert abs(float(out.flat.std()) / (z * c / k) - 1) < 0.03


def test_coefficients_follow_the_aggregators_weights():
    assert coefficient(FedBuff(buffer_size=2, staleness="polynomial", a=0.5), _update(0, 0, torch.ones(2), staleness=3)) == 0.5
    assert coefficient(FedAvg(clients_per_round=2), _update(0, 0, torch.ones(2), samples=7)) == 7.0
    assert coefficient(FedAvg(clients_per_round=2, weighted=False), _update(0, 0, torch.ones(2), samples=7)) == 1.0


def test_reported_epsilon_is_opacus_with_the_same_parameters():
    # Prepare: buffers of clients [0, 1, 1] (client 1 twice: its influence is twice as large)
    z, delta = 1.3, 1e-5
    aggregator = FedBuff(buffer_size=3, staleness="constant")
    channel = UploadChannel(dp=UserLevelDP(mode="central", clip_norm=1.0, noise_multiplier=z, delta=delta))
    channel.setup(SetupContext.of([10] * 2, 0), aggregator)

    # Execute: 7 aggregations
    for step in range(7):
        channel.aggregate(aggregator, _state(torch.zeros(3)), [_update(3 * step + i, c, torch.ones(3)) for i, c in enumerate([0, 1, 1])], step)

    # Assert: client 1's 7 releases at multiplier z/2 give the largest ε
    assert channel.accountant.epsilon == _opacus([(z / 2, 7)], delta)
    assert channel.accountant.histories == {0: {z: 7}, 1: {z / 2: 7}}
    assert rdp_epsilon({z: 7}, delta) == _opacus([(z, 7)], delta)


def test_local_mode_counts_one_release_per_upload():
    channel = UploadChannel(dp=UserLevelDP(mode="local", clip_norm=1.0, noise_multiplier=0.8, delta=1e-6))
    for job in range(5):
        channel.on_upload(_update(job, 2, torch.ones(4)))
    assert channel.accountant.epsilon == _opacus([(0.8, 5)], 1e-6)


def test_target_epsilon_refuses_the_aggregation_that_would_exceed_it():
    z = 1.0
    limit = _opacus([(z, 3)], 1e-5)  # exactly three releases fit
    aggregator = FedBuff(buffer_size=1, staleness="constant")
    channel = UploadChannel(dp=UserLevelDP(mode="central", clip_norm=1.0, noise_multiplier=z, target_epsilon=limit))
    channel.setup(SetupContext.of([10], 0), aggregator)
    results = [channel.aggregate(aggregator, _state(torch.zeros(2)), [_update(j, 0, torch.ones(2))], j) for j in range(4)]
    assert [isinstance(r, ModelState) for r in results[:3]] == [True] * 3 and results[3] == BUDGET_SPENT
    assert channel.accountant.epsilon == limit


def test_accountant_state_round_trips():
    accountant = UserLevelAccountant(1e-5)
    accountant.step({0: 1.0, 1: 0.5})
    copy = UserLevelAccountant(1e-5)
    copy.load_state_dict(accountant.state_dict())
    assert copy.histories == accountant.histories and copy.epsilon == accountant.epsilon


def test_bad_settings_are_all_reported():
    with pytest.raises(InvalidValues) as error:
        UserLevelDP(mode="global", clip_norm=-1, noise_multiplier=-2, delta=2, target_epsilon=0)
    text = str(error.value)
    for part in ("mode must be one of: central, local, got 'global'", "clip_norm must be null or a finite number > 0, got -1",
                 "noise_multiplier must be a finite number >= 0, got -2", "delta must be in (0, 1), got 2",
                 "target_epsilon must be null or a finite number > 0, got 0"):  # fmt: skip
        assert part in text
    with pytest.raises(ValueError, match="clip_norm must be a finite number > 0 when noise_multiplier > 0"):
        UserLevelDP(clip_norm=None, noise_multiplier=1.0)


@pytest.mark.parametrize("aggregator", [FedAvg(), FedAdam(), FedBuff(buffer_size=3)])
def test_central_dp_accepts_linear_aggregators(aggregator):
    UploadChannel(dp=UserLevelDP(mode="central")).setup(SetupContext.of([10] * 3, 0), aggregator)


@pytest.mark.parametrize(
    ("aggregator", "mode", "message"),
    [
        (AsyncFedED(), "central", "dp.mode must be local with AsyncFedED"),
        (CA2FL(), "central", "dp.mode must be local with CA2FL"),
        (FedBuff(buffer_size=4, rule="median"), "central", "dp.mode must be local with FedBuff"),
        (Scaffold(), "local", "dp must be used without SCAFFOLD"),
    ],
)
def test_dp_refuses_aggregators_it_cannot_calibrate(aggregator, mode, message):
    with pytest.raises(ValueError, match=message):
        UploadChannel(dp=UserLevelDP(mode=mode)).setup(SetupContext.of([10] * 4, 0), aggregator)
