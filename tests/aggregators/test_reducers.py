"""Reducers: exact values on hand-made deltas, names and options, the deprecated flat keys, configs."""

from __future__ import annotations

import pytest
import torch

from lightning_asyncfl.aggregators import FedAdam, FedAvg, FedBuff, Krum, Mean, Median, Reducer, TrimmedMean, make_reducer
from lightning_asyncfl.errors import ConfigError, InvalidValue, InvalidValues
from lightning_asyncfl.run import build, compose
from lightning_asyncfl.state import ClientUpdate, Job
from tests.helpers import flat_state

# five deltas of three coordinates; the last is an attacker's
DELTAS = [torch.tensor(v) for v in ([1.0, 2.0, -1.0], [2.0, 0.0, 0.0], [3.0, 4.0, 1.0], [2.5, 1.0, -2.0], [90.0, -80.0, 70.0])]
ONES = [1.0] * 5


def _update(values, base, k, *, staleness=0, samples=1):
    job = Job(job_id=k, client_id=k, base_version=0, seed=k, dispatch_time=0.0, arrival_time=1.0 + k)
    return ClientUpdate(job=job, state=flat_state(values), base=base, num_samples=samples, staleness=staleness)


def test_median_of_an_odd_buffer_is_torch_median():
    assert torch.equal(Median()(DELTAS, ONES), torch.stack(DELTAS).median(dim=0).values)
    assert Median()(DELTAS, ONES).tolist() == [2.5, 1.0, 0.0]


def test_median_of_an_even_buffer_is_the_mean_of_the_two_middle_values():
    assert Median()(DELTAS[:4], ONES[:4]).tolist() == [(2.0 + 2.5) / 2, (1.0 + 2.0) / 2, (-1.0 + 0.0) / 2]


def test_trimmed_mean_drops_floor_of_beta_k_at_each_end():
    # K = 5, trim 0.2: one value dropped at each end of every coordinate, the middle three averaged
    ordered = torch.stack(DELTAS).sort(dim=0).values

    result = TrimmedMean(trim=0.2)(DELTAS, ONES)

    assert torch.equal(result, ordered[1:4].mean(dim=0))
    torch.testing.assert_close(result, torch.tensor([(2.0 + 2.5 + 3.0) / 3, (0.0 + 1.0 + 2.0) / 3, (-1.0 + 0.0 + 1.0) / 3]))


def test_krum_keeps_the_delta_closest_to_its_neighbours_and_multi_krum_averages_the_best():
    # f = 1: each delta's score sums the squared distances to its K - f - 2 = 2 nearest others
    stacked = torch.stack(DELTAS)
    d2 = ((stacked[:, None, :] - stacked[None, :, :]) ** 2).sum(-1)
    scores = [sorted(d2[i, j].item() for j in range(5) if j != i)[:2] for i in range(5)]
    best = sorted(range(5), key=lambda i: sum(scores[i]))

    assert torch.equal(Krum(f=1)(DELTAS, ONES), DELTAS[best[0]])
    torch.testing.assert_close(Krum(f=1, m=3)(DELTAS, ONES), torch.stack([DELTAS[i] for i in best[:3]]).mean(0))
    # by hand: squared distances 0-1: 6, 0-3: 4.25, 1-3: 5.25, 0-2: 12, 1-2: 18, 2-3: 18.25, so the scores
    # are 0: 10.25, 1: 11.25, 2: 30, 3: 9.5 and the attacker's is huge: Krum keeps delta 3
    assert [sum(scores[i]) for i in range(4)] == [10.25, 11.25, 30.0, 9.5] and best[:3] == [3, 0, 1]
    assert Krum(f=1)(DELTAS, ONES).tolist() == [2.5, 1.0, -2.0]


def test_krum_on_a_buffer_too_small_for_it_takes_the_median():
    assert torch.equal(Krum(f=1)(DELTAS[:3], ONES[:3]), torch.stack(DELTAS[:3]).median(dim=0).values)


def test_mean_counts_clients_or_weights_by_samples_and_scales_by_staleness():
    scales, weights = [1.0, 0.5, 0.5, 1.0, 0.25], [1.0, 2.0, 3.0, 4.0, 10.0]
    stacked, s, w = torch.stack(DELTAS), torch.tensor(scales)[:, None], torch.tensor(weights)[:, None]

    torch.testing.assert_close(Mean()(DELTAS, scales), (s * stacked).sum(0) / 5)
    torch.testing.assert_close(Mean()(DELTAS, scales, weights), (w * s * stacked).sum(0) / 20.0)


def test_every_reducer_combines_the_staleness_scaled_rows_after_clipping():
    scales = [1.0, 1.0, 1.0, 1.0, 0.5]
    rows = torch.stack([d * c for d, c in zip(DELTAS, scales)])
    clipped = rows * (2.0 / rows.norm(dim=1, keepdim=True).clamp_min(2.0))

    assert torch.equal(Median(clip_norm=2.0)(DELTAS, scales), clipped.median(dim=0).values)
    torch.testing.assert_close(Mean(clip_norm=2.0)(DELTAS, scales), clipped.mean(0))
    assert clipped.norm(dim=1).max().item() == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("mean", Mean()), (None, Mean()), ("median", Median()), ({"name": "trimmed_mean", "trim": 0.3}, TrimmedMean(trim=0.3)),
     ({"name": "krum", "f": 2, "m": 3}, Krum(f=2, m=3)), ({"_target_": "lightning_asyncfl.aggregators.Median", "clip_norm": 1.5}, Median(clip_norm=1.5))],
)  # fmt: skip
def test_a_reducer_is_named_by_string_by_name_and_options_or_by_target(spec, expected):
    assert repr(make_reducer(spec)) == repr(expected)


def test_bad_names_and_options_list_what_is_allowed():
    with pytest.raises(InvalidValue) as info:
        make_reducer("medain")
    assert str(info.value).startswith("reducer must be one of: mean, median, trimmed_mean, krum; or {name: <one of them>")
    with pytest.raises(InvalidValues) as many:
        make_reducer({"name": "krum", "f": -1, "m": 0, "clip_norm": 0})
    assert [str(p) for p in many.value.problems] == [
        "reducer.f must be an integer >= 0, got -1", "reducer.m must be an integer >= 1, got 0", "reducer.clip_norm must be a finite number > 0, got 0"
    ]  # fmt: skip
    with pytest.raises(InvalidValue, match=r"reducer.trim must be a number in \[0, 0.5\), got 0.5"):
        make_reducer({"name": "trimmed_mean", "trim": 0.5})
    with pytest.raises(InvalidValue, match="reducer must be median's options only"):
        make_reducer({"name": "median", "trim": 0.1})
    with pytest.raises(InvalidValue, match=r"reducer._target_ must be a subclass of lightning_asyncfl.aggregators.Reducer"):
        make_reducer({"_target_": "lightning_asyncfl.aggregators.Staleness.__subclasses__"})


def test_krum_needs_a_buffer_larger_than_f_plus_two():
    with pytest.raises(InvalidValue, match=r"buffer_size must be > reducer.f \+ 2 = 4 with reducer=krum, got 4"):
        FedBuff(buffer_size=4, reducer={"name": "krum", "f": 2})


def test_a_reducer_of_ones_own_plugs_into_any_buffered_aggregator():
    class Largest(Reducer):
        def _combine(self, rows, weights):
            return rows.max(dim=0).values

    base = flat_state([0.0, 0.0, 0.0])
    updates = [_update(d.tolist(), base, k) for k, d in enumerate(DELTAS)]

    assert FedBuff(buffer_size=5, server_lr=1.0, staleness="constant", reducer=Largest()).aggregate(base, updates, 0).flat.tolist() == [90.0, 4.0, 70.0]


def test_the_deprecated_flat_keys_give_the_same_reducer_with_a_warning():
    base = flat_state([0.0, 0.0, 0.0])
    updates = [_update(d.tolist(), base, k, staleness=k % 2) for k, d in enumerate(DELTAS)]
    new = FedBuff(buffer_size=5, reducer={"name": "trimmed_mean", "trim": 0.2, "clip_norm": 50.0})

    with pytest.warns(FutureWarning, match=r"FedBuff: the flat robust key\(s\) clip_norm, rule, trim are deprecated; use server.aggregator.reducer"):
        old = FedBuff(buffer_size=5, rule="trimmed_mean", trim=0.2, clip_norm=50.0)

    assert repr(old) == repr(new)
    assert torch.equal(old.aggregate(base, updates, 5).flat, new.aggregate(base, updates, 5).flat)
    with pytest.raises(InvalidValue, match="reducer must be left at mean when the deprecated keys"), pytest.warns(FutureWarning):
        FedAdam(buffer_size=5, reducer="median", rule="krum")


def test_the_unclipped_mean_is_the_aggregators_own_exact_kernel():
    # Prepare: sample weights and staleness, FedAdam's pseudo-gradient with and without the reducer object
    base = flat_state([0.0, 0.0, 0.0])
    updates = [_update(d.tolist(), base, k, staleness=k, samples=k + 1) for k, d in enumerate(DELTAS)]

    # Execute
    default = FedAdam(buffer_size=5, staleness="polynomial").aggregate(base, updates, 5)
    explicit = FedAdam(buffer_size=5, staleness="polynomial", reducer=Mean()).aggregate(base, updates, 5)

    # Assert
    assert torch.equal(default.flat, explicit.flat)


def test_fedavg_with_the_median_reducer_takes_the_median_of_the_round_models():
    base = flat_state([1.0, 1.0, 1.0])
    models = [(torch.tensor([1.0, 1.0, 1.0]) + d).tolist() for d in DELTAS]
    updates = [_update(m, base, k, samples=k + 1) for k, m in enumerate(models)]

    result = FedAvg(clients_per_round=5, reducer="median").aggregate(base, updates, 0)

    assert torch.equal(result.flat, torch.tensor(models).median(dim=0).values)


@pytest.mark.parametrize("preset", ["fedbuff", "fedbuff_adam", "fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"])
def test_every_buffered_preset_takes_a_reducer_from_the_command_line(preset):
    cfg = compose(["progress=false", f"server={preset}", "server.aggregator.reducer={name:trimmed_mean,trim:0.1}"])

    assert repr(build(cfg)["aggregator"].reducer) == "TrimmedMean(trim=0.1)"


def test_a_bad_reducer_is_one_problem_of_the_config_error():
    with pytest.raises(ConfigError) as info:
        build(compose(["progress=false", "server=fedbuff", "server.aggregator.reducer=medain", "server.aggregator.server_lr=-1"]))

    assert any(p.startswith("server.aggregator.reducer must be one of: mean, median, trimmed_mean, krum") for p in info.value.problems)
    assert any(p.startswith("server.aggregator.server_lr must be") for p in info.value.problems)


def test_a_deprecated_key_on_the_command_line_still_works():
    with pytest.warns(FutureWarning, match="deprecated"):
        aggregator = build(compose(["progress=false", "server=fedbuff", "+server.aggregator.rule=median"]))["aggregator"]

    assert repr(aggregator.reducer) == "Median()"
