"""Batched clients (torch.func vmap): equal to the per-client path within tolerance, falls back when it must."""

from __future__ import annotations

import copy
import os

import pytest
import torch

from lightning_asyncfl.client import ClientTrainer
from lightning_asyncfl.client_algorithms import FedProx
from lightning_asyncfl.executors import BatchedExecutor
from lightning_asyncfl.executors.batched import why_not_batched
from lightning_asyncfl.run import run
from lightning_asyncfl.state import Job, ModelState
from tests.helpers import toy_data, toy_model


def _jobs(clients, base_version=0):
    return [Job(job_id=k, client_id=c, base_version=base_version, seed=100 + k, dispatch_time=0.0, arrival_time=float(k)) for k, c in enumerate(clients)]


@pytest.mark.parametrize("settings", [dict(lr=0.1), dict(lr=0.05, momentum=0.9, weight_decay=0.01)], ids=["sgd", "momentum-wd"])
def test_batched_jobs_equal_per_client_training_within_tolerance(settings):
    # Prepare: clients of unequal sizes (so unequal step counts and a short last batch), two epochs,
    # and jobs from two different base models
    train, _, _ = toy_data(num_clients=4, per_client=12)
    indices = [torch.arange(0, 13), torch.arange(13, 18), torch.arange(18, 48), torch.arange(0, 0)]
    template = toy_model(**settings)
    base0 = ModelState.from_module(template)
    base1 = base0.with_flat(base0.flat + 0.01 * torch.randn(base0.flat.shape, generator=torch.Generator().manual_seed(3)))
    jobs = _jobs([0, 1, 2, 3, 2])
    bases = [base0, base1, base0, base1, base1]
    reference = ClientTrainer(copy.deepcopy(template), train, indices, epochs=2, batch_size=4)
    executor = BatchedExecutor(max_batch=8)
    executor.start(lambda: ClientTrainer(copy.deepcopy(template), train, indices, epochs=2, batch_size=4))

    # Execute
    for job, base in zip(jobs, bases):
        executor.submit(job, base)
    batched = [executor.result(job) for job in jobs]
    expected = [reference.train(job, base) for job, base in zip(jobs, bases)]

    # Assert: one batch of 5 jobs, each job's weights and mean loss as the per-client path
    assert executor.batches == [5]
    for got, want in zip(batched, expected):
        torch.testing.assert_close(got.state.flat, want.state.flat, rtol=1e-5, atol=1e-6)
        assert got.metrics.keys() == want.metrics.keys()
        if want.metrics:
            assert got.metrics["loss"] == pytest.approx(want.metrics["loss"], rel=1e-5)
    torch.testing.assert_close(batched[3].state.flat, base1.flat, rtol=0, atol=0)  # no data: unchanged


def test_batched_run_matches_the_sequential_run_closely(make_cfg):
    sequential = run(make_cfg("server.max_steps=40", name="seq"))
    batched = run(make_cfg("server.max_steps=40", "executor=batched", "executor.max_batch=4", name="batched"))

    a = torch.load(os.path.join(sequential["output_dir"], "final_model.pt"), weights_only=True)
    b = torch.load(os.path.join(batched["output_dir"], "final_model.pt"), weights_only=True)
    assert batched["client_updates"] == sequential["client_updates"]
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)


def test_models_that_cannot_be_batched_are_named_and_fall_back(make_cfg):
    train, _, indices = toy_data()
    dropout = ClientTrainer(toy_model(dropout=0.5), train, indices)
    prox = ClientTrainer(toy_model(), train, indices, algorithm=FedProx(mu=0.1))
    adam = ClientTrainer(toy_model(optimizer="adam"), train, indices)

    assert "dropout" in why_not_batched(dropout)
    assert "FedProx" in why_not_batched(prox)
    assert "adam" in why_not_batched(adam)
    assert why_not_batched(ClientTrainer(toy_model(), train, indices)) is None
    summary = run(make_cfg("executor=batched", "client_algorithm=fedprox", "server.max_steps=6", "server.eval_every=6"))
    assert summary["steps"] == 6 and summary["failed"] == 0
