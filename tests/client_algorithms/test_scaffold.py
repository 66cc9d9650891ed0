"""SCAFFOLD: the client's corrected steps and option II control update, the server step, the pairing check."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from lightning_asyncfl.aggregators import FedAvg, Scaffold
from lightning_asyncfl.aggregators.scaffold import scaffold_step
from lightning_asyncfl.client import ClientTrainer
from lightning_asyncfl.client_algorithms import Scaffold as ScaffoldClient
from lightning_asyncfl.delays import ConstantDelay
from lightning_asyncfl.errors import ConfigError
from lightning_asyncfl.run import run
from lightning_asyncfl.schedulers import RoundScheduler
from lightning_asyncfl.state import Job, ModelState
from tests.helpers import make_loop, toy_data, toy_model


def _job(client: int, seed: int = 5) -> Job:
    return Job(job_id=0, client_id=client, base_version=0, seed=seed, dispatch_time=0.0, arrival_time=1.0)


def test_client_runs_corrected_sgd_and_updates_its_control_variate_by_option_two():
    # Prepare: a server control variate c and a stored c_i for client 1
    train, _, indices = toy_data()
    template = toy_model(lr=0.2)
    base = ModelState.from_module(template)
    size = base.layout.parameter_size
    c = torch.linspace(-0.1, 0.1, size)
    c_i = torch.linspace(0.05, -0.05, size)
    trainer = ClientTrainer(copy.deepcopy(template), train, indices, epochs=1, batch_size=4, algorithm=ScaffoldClient())

    # Execute: the trainer, and the same K = 3 steps by hand: y <- y - lr (g - c_i + c)
    result = trainer.train(_job(1), base.with_side(control=c), {"control": c_i})
    trained = result.state
    model = copy.deepcopy(template)
    order = indices[1][torch.randperm(12, generator=torch.Generator().manual_seed(5))]
    x, y = train.tensors
    correction = base.layout.parameter_views(c - c_i)
    for start in range(0, 12, 4):
        idx = order[start : start + 4]
        model.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        with torch.no_grad():
            for p, corr in zip(model.parameters(), correction):
                p.sub_(0.2 * (p.grad + corr))

    # Assert
    y_flat = ModelState.from_module(model).flat
    torch.testing.assert_close(trained.flat, y_flat, rtol=0, atol=1e-6)
    expected_c_i = c_i - c + (base.flat[:size] - y_flat[:size]) / (3 * 0.2)
    torch.testing.assert_close(result.client_state["control"], expected_c_i, rtol=0, atol=1e-5)
    torch.testing.assert_close(trained.side["control_delta"], expected_c_i - c_i, rtol=0, atol=1e-5)


def test_client_control_variate_is_kept_by_the_loop_between_a_clients_jobs():
    # Prepare: one client, two rounds; c_i after round 1 must be the input of round 2
    loop = make_loop(Scaffold(clients_per_round=1, num_clients=1), RoundScheduler(clients_per_round=1), ConstantDelay(value=1.0),
                     num_clients=1, max_steps=2)
    loop.make_trainer = _with_algorithm(loop.make_trainer, ScaffoldClient())
    seen = []
    original = loop.executor.submit
    loop.executor.submit = lambda job, base, client_state=None: (seen.append(client_state), original(job, base, client_state))

    loop.run()

    assert seen[0] is None  # first job: no c_i yet (zeros)
    assert set(seen[1]) == {"control"} and bool(seen[1]["control"].abs().sum() > 0)
    assert not torch.equal(loop.client_states[0]["control"], seen[1]["control"])  # updated again by job 2


def test_server_step_averages_deltas_and_moves_c_by_the_sum_over_n():
    x, c = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0])
    deltas = [torch.tensor([2.0, 0.0]), torch.tensor([0.0, 2.0])]
    control_deltas = [torch.tensor([4.0, 0.0]), torch.tensor([4.0, -8.0])]

    new_x, new_c = scaffold_step(x, c, deltas, control_deltas, num_clients=8, server_lr=0.5)

    assert new_x.tolist() == [1.5, 2.5]  # x + 0.5/2 * [2, 2]
    assert new_c.tolist() == [1.0, 3.0]  # c + 1/8 * [8, -8]


def test_first_scaffold_round_equals_unweighted_fedavg():
    # every c and c_i starts at 0, so round one is plain local SGD averaged with server_lr 1
    scaffold = make_loop(Scaffold(clients_per_round=3, num_clients=3), RoundScheduler(clients_per_round=3), ConstantDelay(value=1.0), max_steps=1)
    scaffold.make_trainer = _with_algorithm(scaffold.make_trainer, ScaffoldClient())
    fedavg = make_loop(FedAvg(clients_per_round=3, weighted=False), RoundScheduler(clients_per_round=3), ConstantDelay(value=1.0), max_steps=1)

    scaffold.run(), fedavg.run()

    torch.testing.assert_close(scaffold.global_state.flat, fedavg.global_state.flat, rtol=0, atol=1e-6)
    assert "control" in scaffold.global_state.side


def _with_algorithm(make, algorithm):
    def wrapped():
        trainer = make()
        trainer.algorithm = algorithm
        return trainer

    return wrapped


def test_scaffold_server_without_its_client_half_is_a_config_error(make_cfg):
    cfg = make_cfg("server=scaffold", "client_algorithm=none")

    with pytest.raises(ConfigError, match="SCAFFOLD needs both halves"):
        run(cfg)


def test_server_scaffold_preset_runs_both_halves(make_cfg):
    summary = run(make_cfg("server=scaffold", "server.max_steps=3", "server.eval_every=3"))

    assert summary["steps"] == 3 and summary["applied"] == 30
