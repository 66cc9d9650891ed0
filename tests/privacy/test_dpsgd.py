"""Example-level DP-SGD: the same clipped gradient as Opacus' DPOptimizer, its ε from Opacus' accountant."""

from __future__ import annotations

import csv
import math
from collections import Counter

import pytest
import torch
from opacus import GradSampleModule
from opacus.accountants import RDPAccountant
from opacus.optimizers import DPOptimizer

from lightning_asyncfl.errors import ConfigError
from lightning_asyncfl.privacy import DPSGD
from lightning_asyncfl.privacy.dpsgd import clipped_noisy_gradients


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))


def test_clipped_gradient_equals_opacus_dp_optimizer_without_noise():
    # Prepare: one batch of 8, per-sample clip 0.3
    x, y = torch.randn(8, 6, generator=torch.Generator().manual_seed(1)), torch.arange(8) % 3
    ours, theirs = _net(), _net()

    # Execute: ours from the per-sample gradients; Opacus' DPOptimizer with noise 0
    GradSampleModule(ours, loss_reduction="mean")
    torch.nn.functional.cross_entropy(ours(x), y).backward()
    grads = clipped_noisy_gradients([p.grad_sample for p in ours.parameters()], 0.3, 0.0, torch.Generator())
    model = GradSampleModule(theirs, loss_reduction="mean")
    optimizer = DPOptimizer(torch.optim.SGD(theirs.parameters(), lr=1.0), noise_multiplier=0.0, max_grad_norm=0.3, expected_batch_size=8)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.pre_step()

    # Assert
    for g, p in zip(grads, theirs.parameters()):
        assert torch.allclose(g, p.grad, atol=1e-7)


def test_dpsgd_run_reports_opacus_epsilon_of_each_clients_steps(make_cfg, tmp_path):
    # Execute
    summary = run_dpsgd(make_cfg)

    # Assert: ε = max over clients of RDP(σ, q = 16 / n_k, steps = jobs · ceil(n_k / 16))
    with open(tmp_path / "run" / "updates.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] in ("accepted", "stale")]
    jobs, samples = Counter(int(r["client_id"]) for r in rows), {int(r["client_id"]): int(r["num_samples"]) for r in rows}
    expected = 0.0
    for client, count in jobs.items():
        accountant = RDPAccountant()
        accountant.history = [(0.7, 16 / samples[client], count * math.ceil(samples[client] / 16))]
        expected = max(expected, accountant.get_epsilon(delta=1e-5))
    assert summary["privacy"]["dpsgd"]["epsilon"] == pytest.approx(expected, rel=1e-12)
    assert summary["status"] == "completed"


def run_dpsgd(make_cfg):
    from lightning_asyncfl.run import run

    return run(make_cfg("client_algorithm=dpsgd", "client_algorithm.noise_multiplier=0.7"))


def test_dpsgd_refuses_gradient_accumulation(make_cfg):
    from lightning_asyncfl.run import run

    with pytest.raises(ConfigError, match=r"client.accumulate_grad_batches must be 1 with client_algorithm=dpsgd \(each step is one noised batch\), got 2"):
        run(make_cfg("client_algorithm=dpsgd", "client.accumulate_grad_batches=2"))


def test_bad_dpsgd_settings():
    with pytest.raises(ValueError, match="max_grad_norm must be a number > 0, got 0"):
        DPSGD(max_grad_norm=0)
