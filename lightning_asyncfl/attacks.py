"""Malicious clients, simulated: a fraction of the clients corrupt every update they send.

The attacked clients are drawn once, at the start, from the run's own attack stream (so
the same seed gives the same attackers whatever else changes). A malicious client trains
honestly, then changes what it sends, with Δ = trained − base:

- ``scale`` (model replacement, Bagdasaryan et al. 2020, https://arxiv.org/abs/1807.00459):
  sends base + factor · Δ;
- ``sign_flip`` (Damaskinos et al. 2018; Fang et al. 2020): sends base − factor · Δ;
- ``noise``: sends trained + N(0, σ²) per coordinate, drawn from the job's own seed.

The loop applies the attack before it checks the update, as a server would receive it;
``summary.json`` counts the attacked updates (``attacked``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lightning_asyncfl import seeding
from lightning_asyncfl.context import SetupContext
from lightning_asyncfl.errors import checking, require
from lightning_asyncfl.state import Job, ModelState


class Attack:
    """No attack (``attack=none``); subclasses write :meth:`_corrupt`.

    Args:
        fraction: share of the clients that attack, in [0, 1]; rounded to a whole number.
    """

    def __init__(self, *, fraction: float = 0.0) -> None:
        with checking() as check:
            check(0 <= fraction <= 1, "fraction", fraction, "in [0, 1]")
        self.fraction = float(fraction)
        self.malicious: frozenset[int] = frozenset()

    def setup(self, context: SetupContext | int, rng: np.random.Generator | None = None) -> None:
        """Draw the attacking clients, once, before the run, from the run's attack stream.

        ``setup(num_clients, rng)`` (the interface before :class:`SetupContext`) still works.
        """
        if isinstance(context, SetupContext):
            num_clients, rng = context.num_clients, context.stream(seeding.ATTACK)
        else:
            num_clients = int(context)
        count = round(self.fraction * num_clients)
        if self.fraction > 0 and count == 0:  # an attack that attacks nobody is a mistake, not a baseline
            require(False, "fraction", self.fraction, f"0 or at least {0.5 / num_clients:g} (half a client of {num_clients}, so that one attacks)")
        self.malicious = frozenset(int(c) for c in rng.choice(num_clients, size=count, replace=False)) if count else frozenset()

    def apply(self, job: Job, base: ModelState, trained: ModelState) -> ModelState:
        """What the client of ``job`` sends: ``trained`` itself unless the client attacks."""
        if job.client_id not in self.malicious:
            return trained
        return trained.with_flat(self._corrupt(job, base.flat.to(trained.flat.device), trained.flat))

    def _corrupt(self, job: Job, base: torch.Tensor, trained: torch.Tensor) -> torch.Tensor:
        return trained

    def _args(self) -> dict[str, Any]:
        return {"fraction": self.fraction}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in self._args().items()) + ")"


class ScaleAttack(Attack):
    """Sends base + factor · (trained − base)."""

    def __init__(self, *, fraction: float = 0.2, factor: float = 100.0) -> None:
        super().__init__(fraction=fraction)
        self.factor = float(factor)

    def _corrupt(self, job: Job, base: torch.Tensor, trained: torch.Tensor) -> torch.Tensor:
        return base + self.factor * (trained - base)

    def _args(self) -> dict[str, Any]:
        return {**super()._args(), "factor": self.factor}


class SignFlipAttack(ScaleAttack):
    """Sends base − factor · (trained − base)."""

    def __init__(self, *, fraction: float = 0.2, factor: float = 1.0) -> None:
        super().__init__(fraction=fraction, factor=-float(factor))
        self.flip = float(factor)

    def _args(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "factor": self.flip}


class NoiseAttack(Attack):
    """Sends trained + N(0, sigma²) per coordinate, from the job's own seed."""

    def __init__(self, *, fraction: float = 0.2, sigma: float = 1.0) -> None:
        with checking() as check:
            check(sigma >= 0, "sigma", sigma, ">= 0")
            super().__init__(fraction=fraction)
        self.sigma = float(sigma)

    def _corrupt(self, job: Job, base: torch.Tensor, trained: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(job.seed ^ 0x5EED)
        noise = torch.randn(trained.shape, generator=generator, dtype=trained.dtype)
        return trained + self.sigma * noise.to(trained.device)

    def _args(self) -> dict[str, Any]:
        return {**super()._args(), "sigma": self.sigma}
