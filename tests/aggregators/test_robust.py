"""Robust combinations (median, trimmed mean, Krum, clipping), attacks, and FedBuff under attack on digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_asyncfl.aggregators import FedAdam, FedAvgM, FedBuff
from lightning_asyncfl.aggregators.robust import clip_norms, coordinate_median, krum_scores, multi_krum, trimmed_mean
from lightning_asyncfl.attacks import NoiseAttack, ScaleAttack, SignFlipAttack
from lightning_asyncfl.errors import ConfigError, InvalidValues
from lightning_asyncfl.run import run
from lightning_asyncfl.state import ClientUpdate, Job
from tests.helpers import flat_state

ROWS = torch.tensor([[1.0, 10.0], [2.0, -4.0], [9.0, 0.0], [4.0, 2.0]])


def test_coordinate_median_takes_the_middle_value_or_the_mean_of_the_two_middle_values():
    assert coordinate_median(ROWS).tolist() == [3.0, 1.0]  # even K: (2 + 4) / 2, (0 + 2) / 2
    assert coordinate_median(ROWS[:3]).tolist() == [2.0, 0.0]


def test_trimmed_mean_drops_the_extremes_of_each_coordinate():
    assert trimmed_mean(ROWS, 0.25).tolist() == [3.0, 1.0]  # drop 1 at each end: mean of {2, 4}, {0, 2}
    assert trimmed_mean(ROWS, 0.0).tolist() == ROWS.mean(dim=0).tolist()


def test_krum_scores_sum_the_nearest_squared_distances_and_multi_krum_averages_the_best():
    rows = torch.tensor([[0.0], [1.0], [3.0], [100.0]])
    # f = 1: each row's K - f - 2 = 1 nearest other row
    assert krum_scores(rows, 1).tolist() == [1.0, 1.0, 4.0, 9409.0]
    assert multi_krum(rows, 1, 1).tolist() == [0.0]  # ties go to the first
    assert multi_krum(rows, 1, 3).tolist() == [pytest.approx(4 / 3)]
    with pytest.raises(ValueError, match="needs more than 3 updates"):
        krum_scores(rows[:3], 1)


def test_clip_norms_scales_only_the_rows_above_the_bound():
    clipped = clip_norms(torch.tensor([[3.0, 4.0], [0.3, 0.4]]), 1.0)
    torch.testing.assert_close(clipped, torch.tensor([[0.6, 0.8], [0.3, 0.4]]))


def _update(values, base, job_id=0, staleness=0):
    job = Job(job_id=job_id, client_id=job_id, base_version=0, seed=job_id, dispatch_time=0.0, arrival_time=1.0)
    return ClientUpdate(job=job, state=flat_state(values), base=base, num_samples=1, staleness=staleness)


def test_fedbuff_median_rule_steps_by_the_median_of_weighted_deltas():
    base = flat_state([0.0, 0.0])
    updates = [_update(v, base, k) for k, v in enumerate([[1.0, 1.0], [2.0, -1.0], [300.0, 300.0]])]
    fedbuff = FedBuff(buffer_size=3, server_lr=0.5, staleness="constant", rule="median")

    assert fedbuff.aggregate(base, updates, 0).flat.tolist() == [1.0, 0.5]  # 0.5 * median


def test_fedopt_robust_rule_takes_the_median_of_staleness_scaled_deltas_as_its_pseudo_gradient():
    # Prepare: FedAvgM with no momentum and lr 1 steps by Δ_t itself
    base = flat_state([0.0, 0.0])
    updates = [_update(v, base, k, staleness=1) for k, v in enumerate([[1.0, 1.0], [2.0, -1.0], [300.0, 300.0]])]
    fedavgm = FedAvgM(buffer_size=3, server_lr=1.0, momentum=0.0, staleness="polynomial", a=1.0, rule="median")

    # Execute / Assert: s(1) = 1/2 for polynomial a=1, so Δ_t = median(Δ_i) / 2
    assert fedavgm.aggregate(base, updates, 0).flat.tolist() == [1.0, 0.5]
    clipped = FedAvgM(buffer_size=3, server_lr=1.0, momentum=0.0, rule="mean", clip_norm=1.0, staleness="constant")
    expected = torch.stack([clip_norms(torch.tensor([v]), 1.0)[0] for v in ([1.0, 1.0], [2.0, -1.0], [300.0, 300.0])]).mean(0)
    assert torch.allclose(clipped.aggregate(base, updates, 0).flat, expected)


@pytest.mark.slow  # 15 s: 2 runs of 200 versions; the reducers' maths have exact unit tests
def test_fedadam_with_median_keeps_the_clean_accuracy_under_a_scaling_attack(make_cfg):
    args = ["server=fedbuff_adam", "server.max_steps=200", "server.eval_every=100"]
    clean = run(make_cfg(*args, name="clean"))
    median = run(make_cfg(*args, "attack=scale", "server.aggregator.reducer=median", name="median"))

    assert median["attacked"] > 0
    assert median["final_accuracy"] >= clean["final_accuracy"] - 0.05


@pytest.mark.parametrize("cls", [FedBuff, FedAdam])
def test_buffered_aggregators_reject_bad_robust_settings_together(cls):
    with pytest.raises(InvalidValues) as error:
        cls(buffer_size=3, rule="krum", krum_f=1, trim=0.5, clip_norm=0)
    text = str(error.value)
    assert "buffer_size must be > krum_f + 2 = 3 with rule=krum, got 3" in text
    assert "trim must be in [0, 0.5), got 0.5" in text and "clip_norm must be null or > 0, got 0" in text


def test_attacks_corrupt_only_the_malicious_clients_updates():
    base, trained = flat_state([1.0, 1.0]), flat_state([2.0, 0.0])
    scale, flip, noise = ScaleAttack(fraction=0.5, factor=10), SignFlipAttack(fraction=0.5), NoiseAttack(fraction=0.5, sigma=1)
    for attack in (scale, flip, noise):
        attack.setup(4, np.random.default_rng(0))
    bad = Job(job_id=3, client_id=sorted(scale.malicious)[0], base_version=0, seed=7, dispatch_time=0.0, arrival_time=1.0)
    good = Job(job_id=4, client_id=sorted(set(range(4)) - scale.malicious)[0], base_version=0, seed=7, dispatch_time=0.0, arrival_time=1.0)

    assert len(scale.malicious) == 2
    assert scale.apply(bad, base, trained).flat.tolist() == [11.0, -9.0]
    assert flip.apply(bad, base, trained).flat.tolist() == [0.0, 2.0]
    noisy = noise.apply(bad, base, trained).flat
    assert not torch.equal(noisy, trained.flat) and torch.equal(noisy, noise.apply(bad, base, trained).flat)
    assert scale.apply(good, base, trained) is trained


@pytest.mark.slow  # 45 s: 5 runs of 200 versions; the reducers' maths have exact unit tests
def test_fedbuff_with_median_or_trimmed_mean_survives_a_scaling_attack_that_breaks_the_mean(make_cfg):
    args = ["server=fedbuff", "server.max_steps=200", "server.eval_every=100"]  # the preset's 200 versions
    clean = run(make_cfg(*args, name="clean"))
    plain = run(make_cfg(*args, "attack=scale", name="plain"))
    median = run(make_cfg(*args, "attack=scale", "server.aggregator.reducer=median", name="median"))
    # a trimmed mean must cut at least the attackers a buffer may hold: K = 10, 3 cut at each end
    clean_10 = run(make_cfg(*args, "server.aggregator.buffer_size=10", name="clean10"))
    trimmed = run(make_cfg(*args, "attack=scale", "server.aggregator.reducer={name:trimmed_mean,trim:0.3}",
                           "server.aggregator.buffer_size=10", name="trimmed"))

    assert plain["attacked"] > 0 and median["attacked"] == plain["attacked"]
    assert plain["final_accuracy"] < clean["final_accuracy"] - 0.3  # collapses
    assert median["final_accuracy"] >= clean["final_accuracy"] - 0.05
    assert trimmed["final_accuracy"] >= clean_10["final_accuracy"] - 0.05


def test_bad_attack_values_are_config_errors(make_cfg):
    with pytest.raises(ConfigError, match=r"attack.fraction must be in \[0, 1\], got 1.5"):
        run(make_cfg("attack=scale", "attack.fraction=1.5"))
