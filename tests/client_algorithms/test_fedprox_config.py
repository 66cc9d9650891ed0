"""FedProx through the config: client_algorithm=fedprox reaches the trainer and changes the result."""

from __future__ import annotations

import pytest
import torch

from lightning_asyncfl.client_algorithms import FedProx, proximal_term
from lightning_asyncfl.errors import ConfigError, InvalidValue
from lightning_asyncfl.run import run


def test_proximal_term_is_half_mu_times_squared_distance():
    p, a = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])], [torch.tensor([0.0, 0.0]), torch.tensor([[1.0]])]
    assert proximal_term(p, a, mu=0.5).item() == 0.25 * (1 + 4 + 4)


def test_negative_mu_is_rejected():
    with pytest.raises(InvalidValue, match="mu must be a finite number >= 0, got -1"):
        FedProx(mu=-1)


def test_fedprox_from_the_config_changes_the_weights_and_mu_zero_does_not(make_cfg):
    plain = run(make_cfg(name="plain"))
    prox = run(make_cfg("client_algorithm=fedprox", "client_algorithm.mu=1.0", name="prox"))
    zero = run(make_cfg("client_algorithm=fedprox", "client_algorithm.mu=0", name="zero"))

    load = lambda s: torch.load(f"{s['output_dir']}/final_model.pt", weights_only=True)  # noqa: E731
    a, b, c = load(plain), load(prox), load(zero)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_bad_mu_in_the_config_names_the_key(make_cfg):
    with pytest.raises(ConfigError, match=r"client_algorithm.mu must be a finite number >= 0, got -0.5"):
        run(make_cfg("client_algorithm=fedprox", "client_algorithm.mu=-0.5"))
