"""FADAS against a closed-form sequence, the authors' server step line by line, the delay-adaptive rate, its state."""

from __future__ import annotations

import io
import math

import pytest
import torch

from lightning_asyncfl.aggregators import FADAS
from lightning_asyncfl.aggregators.fadas import delay_adaptive_lr
from lightning_asyncfl.errors import InvalidValue, InvalidValues
from lightning_asyncfl.state import ClientUpdate, Job, Layout, ModelState
from tests.helpers import flat_state

HYPER = {"buffer_size": 2, "server_lr": 0.5, "beta1": 0.5, "beta2": 0.75, "epsilon": 0.5, "delay_adaptive": True, "tau_c": 1}


def _update(trained, base, *, staleness=0, job_id=0):
    job = Job(job_id=job_id, client_id=job_id, base_version=0, seed=0, dispatch_time=0.0, arrival_time=float(job_id))
    return ClientUpdate(job=job, state=flat_state(trained), base=flat_state(base), num_samples=1, staleness=staleness)


def _first_buffer():
    # deltas [2, 4] (staleness 0) and [4, -8] (staleness 3): Delta_t = [3, -2], tau_max = 3
    return [_update([3.0, 5.0], [1.0, 1.0], staleness=0, job_id=0), _update([4.0, -7.0], [0.0, 1.0], staleness=3, job_id=1)]


def _second_buffer():
    # deltas [-2, 1] and [-2, -1] (staleness 1 each): Delta_t = [-2, 0], tau_max = 1 <= tau_c
    return [_update([-1.0, 2.0], [1.0, 1.0], staleness=1, job_id=2), _update([-2.0, -1.0], [0.0, 0.0], staleness=1, job_id=3)]


def _authors_fedams(params, exp_avg, exp_avg_sq, max_exp_avg_sq, grad, iteration, lr, lr_l, beta1, beta2, eps):
    """The authors' server step, update.py ``update_model_inplace`` branch ``fedams``, line by line (one tensor)."""
    bias_correction1 = 1 - beta1**iteration
    bias_correction2 = 1 - beta2**iteration
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad.conj(), value=1 - beta2)
    torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
    denom = (max_exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(eps)
    step_size = lr * lr_l / bias_correction1
    params.addcdiv_(exp_avg, denom, value=step_size)


@pytest.mark.parametrize(
    ("server_lr", "tau_max", "tau_c", "expected"),
    [(0.5, 3, 1, 0.5 / 3), (0.1, 3, 1, 0.1 / 3), (0.01, 3, 1, 0.01 / 3), (0.5, 1, 1, 0.5), (0.5, 0, 0, 0.5), (0.5, 4, 0, 0.125)],
)
def test_delay_adaptive_learning_rate_divides_by_the_largest_staleness_above_tau_c(server_lr, tau_max, tau_c, expected):
    # the authors' code: lr_l = 1/max(delay) if max(delay) > tauc else 1, step lr * lr_l
    assert delay_adaptive_lr(server_lr, tau_max, tau_c) == pytest.approx(expected, rel=1e-15)


def test_the_preset_rate_now_acts_at_ordinary_staleness():
    # min(0.01, 1/3) was 0.01, so the rule did nothing at the preset; eta / tau_max is 0.01 / 3
    assert FADAS(server_lr=0.01, tau_c=1).learning_rate(3) == pytest.approx(0.01 / 3)
    assert FADAS(server_lr=0.5, delay_adaptive=False, tau_c=0).learning_rate(10) == 0.5
    assert FADAS(server_lr=0.5, delay_adaptive=True, tau_c=0).learning_rate(10) == pytest.approx(0.05)


def test_two_steps_match_the_closed_form_with_bias_corrections_and_the_delay_adaptive_rate():
    # Prepare: beta1 = 1/2, beta2 = 3/4, eps = 1/2, eta = 1/2, tau_c = 1
    aggregator = FADAS(**HYPER)

    # Execute / Assert, step t = 1: Delta = [3, -2], tau_max = 3 > 1 so eta_1 = 1/6.
    # m = [3/2, -1], v = v_hat = [9/4, 1]; 1 - beta1 = 1/2, sqrt(1 - beta2) = 1/2:
    # denominator sqrt(v_hat) / (1/2) + 1/2 = [7/2, 5/2], step (1/6) / (1/2) = 1/3
    # x_2 = [1 + (1/3)(3/2)/(7/2), 1 - (1/3)(1)/(5/2)] = [8/7, 13/15]
    first = aggregator.aggregate(flat_state([1.0, 1.0]), _first_buffer(), version=4)
    torch.testing.assert_close(first.flat, torch.tensor([8 / 7, 13 / 15]))
    state = aggregator.state_dict()
    torch.testing.assert_close(state["m"], torch.tensor([1.5, -1.0]))
    torch.testing.assert_close(state["v_hat"], torch.tensor([2.25, 1.0]))
    assert state["step"] == 1

    # step t = 2: Delta = [-2, 0], tau_max = 1 <= 1 so eta_2 = 1/2; m = [-1/4, -1/2],
    # v = [43/16, 3/4], v_hat = [43/16, 1] (the second keeps its maximum); 1 - beta1^2 = 3/4,
    # 1 - beta2^2 = 7/16: denominator [sqrt(43/7) + 1/2, sqrt(16/7) + 1/2], step (1/2) / (3/4) = 2/3
    second = aggregator.aggregate(first, _second_buffer(), version=5)
    expected = [8 / 7 + (2 / 3) * -0.25 / (math.sqrt(43 / 7) + 0.5), 13 / 15 + (2 / 3) * -0.5 / (math.sqrt(16 / 7) + 0.5)]
    torch.testing.assert_close(second.flat, torch.tensor(expected))
    torch.testing.assert_close(aggregator.state_dict()["v"], torch.tensor([2.6875, 0.75]))
    torch.testing.assert_close(aggregator.state_dict()["v_hat"], torch.tensor([2.6875, 1.0]))
    assert aggregator.state_dict()["step"] == 2


def test_without_bias_correction_it_is_the_uncorrected_amsgrad_step():
    # eta_1 = 1/6; denominator sqrt(v_hat) + 1/2 = [2, 3/2]: x = [1 + (1/6)(3/2)/2, 1 - (1/6)/(3/2)]
    aggregator = FADAS(**HYPER, bias_correction=False)

    new = aggregator.aggregate(flat_state([1.0, 1.0]), _first_buffer(), version=4)

    torch.testing.assert_close(new.flat, torch.tensor([1.125, 1.0 - 1.0 / 9.0]))


def test_five_steps_follow_the_authors_code_line_by_line():
    # Prepare: random deltas and staleness; the oracle is the authors' fedams branch and lr_l rule
    generator = torch.Generator().manual_seed(0)
    aggregator = FADAS(buffer_size=3, server_lr=0.05, beta1=0.9, beta2=0.99, epsilon=1e-3, tau_c=2)
    x = torch.randn(6, generator=generator, dtype=torch.float64)
    ours = ModelState(x.clone(), Layout.from_tensors({"w": x}, num_parameters=1))
    params, m, v, v_hat = x.clone(), torch.zeros(6, dtype=torch.float64), torch.zeros(6, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)

    for epoch in range(5):
        deltas = [torch.randn(6, generator=generator, dtype=torch.float64) for _ in range(3)]
        delays = [int(d) for d in torch.randint(0, 6, (3,), generator=generator)]
        updates = [
            ClientUpdate(job=Job(job_id=k, client_id=k, base_version=0, seed=0, dispatch_time=0.0, arrival_time=1.0),
                         state=ours.with_flat(ours.flat + d), base=ours, num_samples=1, staleness=tau)
            for k, (d, tau) in enumerate(zip(deltas, delays))
        ]  # fmt: skip

        # Execute
        ours = aggregator.aggregate(ours, updates, version=epoch)
        lr_l = 1 / max(delays) if max(delays) > 2 else 1
        _authors_fedams(params, m, v, v_hat, sum(deltas) / 3, epoch + 1, 0.05, lr_l, 0.9, 0.99, 1e-3)

        # Assert
        torch.testing.assert_close(ours.flat, params, rtol=1e-12, atol=1e-12)


def test_state_dict_round_trip_through_torch_save_continues_identically():
    # Prepare
    original = FADAS(**HYPER)
    x = original.aggregate(flat_state([1.0, 1.0]), _first_buffer(), version=4)
    blob = io.BytesIO()
    torch.save(original.state_dict(), blob)
    blob.seek(0)
    restored = FADAS(**HYPER)
    restored.load_state_dict(torch.load(blob, weights_only=True))

    # Execute
    a = original.aggregate(x, _second_buffer(), version=5)
    b = restored.aggregate(x, _second_buffer(), version=5)

    # Assert
    assert torch.equal(a.flat, b.flat)
    assert sorted(restored.state_dict()) == ["m", "step", "v", "v_hat"] and restored.state_dict()["step"] == 2
    assert all(torch.equal(original.state_dict()[k], restored.state_dict()[k]) for k in ("m", "v", "v_hat"))
    assert FADAS().state_dict() == {}


def test_load_state_dict_rejects_missing_keys_and_wrong_shapes():
    with pytest.raises(ValueError, match="FADAS state needs keys"):
        FADAS().load_state_dict({"m": torch.zeros(2), "step": 1})
    with pytest.raises(ValueError, match="FADAS state needs 'step'"):
        FADAS().load_state_dict({"m": torch.zeros(2), "v": torch.zeros(2), "v_hat": torch.zeros(2)})
    aggregator = FADAS(buffer_size=1)
    aggregator.load_state_dict({"m": torch.zeros(3), "v": torch.zeros(3), "v_hat": torch.zeros(3), "step": 4})
    with pytest.raises(ValueError, match="does not fit"):
        aggregator.aggregate(flat_state([0.0, 0.0]), [_update([1.0, 1.0], [0.0, 0.0])], version=0)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"buffer_size": 0}, "buffer_size"), ({"server_lr": 0.0}, "server_lr"), ({"beta1": 1.0}, "beta1"), ({"beta1": -0.1}, "beta1"),
        ({"beta2": 1.0}, "beta2"), ({"epsilon": 0.0}, "epsilon"), ({"tau_c": -1}, "tau_c"),
    ],
)  # fmt: skip
def test_bad_hyperparameters_name_their_key(kwargs, key):
    with pytest.raises(InvalidValue) as info:
        FADAS(**kwargs)
    assert info.value.key == key


def test_every_bad_hyperparameter_is_reported_at_once():
    with pytest.raises(InvalidValues) as info:
        FADAS(buffer_size=0, server_lr=0, beta1=1, beta2=2, epsilon=-1, tau_c=-1)
    assert [p.key for p in info.value.problems] == ["buffer_size", "server_lr", "beta1", "beta2", "epsilon", "tau_c"]


def test_repr_names_the_hyperparameters():
    assert repr(FADAS(**HYPER)) == ("FADAS(buffer_size=2, server_lr=0.5, beta1=0.5, beta2=0.75, epsilon=0.5, delay_adaptive=True, "
                                    "tau_c=1.0, bias_correction=True)")
