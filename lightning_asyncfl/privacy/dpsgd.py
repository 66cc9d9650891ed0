"""Example-level DP-SGD inside each client (``client_algorithm=dpsgd``), with Opacus' per-sample gradients.

Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar, Zhang. "Deep Learning with Differential
Privacy", CCS 2016, https://arxiv.org/abs/1607.00133, Algorithm 1. At every local step on a
batch B of a client:

    g̃ = (1/|B|) ( Σ_{i∈B} g_i · min(1, C/‖g_i‖₂)  +  N(0, σ²C²) )

with per-sample gradients g_i from Opacus' ``GradSampleModule`` hooks (Yousefpour et al.
2021), clip norm C = ``max_grad_norm`` and noise multiplier σ. The optimizer then steps on
g̃ as usual. The noise comes from the job's own seeded stream.

Accounting: a client's data is touched only by its own steps, so its ε is the RDP of its
total steps at sampling rate q = batch_size / n_k (Opacus' ``RDPAccountant``); the run
reports the largest over clients (``summary.json`` ``privacy.dpsgd``). Opacus' analysis
assumes Poisson sampling of each batch; the client trainer draws shuffled fixed-size
batches, as most DP-SGD code does, so the reported ε is the customary approximation, not
a proven bound for shuffling (Chua et al. 2024, https://arxiv.org/abs/2403.17673).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_asyncfl import seeding
from lightning_asyncfl.client_algorithms.base import ClientAlgorithm, LocalTraining
from lightning_asyncfl.errors import checking
from lightning_asyncfl.context import SetupContext

#: the seeded stream of DP-SGD noise (below the job's seed)
DPSGD_STREAM = 23
#: the client-state key of a client's DP-SGD steps so far
STEPS_KEY = "dpsgd_steps"


def clipped_noisy_gradients(grad_samples: list[Tensor], max_grad_norm: float, noise_std: float, generator: torch.Generator) -> list[Tensor]:
    """(1/B)(Σ_i clip(g_i) + N(0, noise_std²)) per parameter, from per-sample gradients ``[B, *shape]``."""
    batch = grad_samples[0].shape[0]
    norms = torch.sqrt(sum(g.reshape(batch, -1).pow(2).sum(1) for g in grad_samples))
    factors = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
    out = []
    for g in grad_samples:
        summed = torch.einsum("i,i...->...", factors, g)
        noise = torch.randn(summed.shape, generator=generator, dtype=summed.dtype).to(summed.device) * noise_std
        out.append((summed + noise) / batch)
    return out


class DPSGD(ClientAlgorithm):
    """Per-sample clipping and Gaussian noise at every local step.

    Args:
        noise_multiplier: σ >= 0.
        max_grad_norm: C > 0, the per-sample gradient clip.
        delta: δ of the reported (ε, δ).
    """

    def __init__(self, *, noise_multiplier: float = 1.0, max_grad_norm: float = 1.0, delta: float = 1e-5) -> None:
        with checking() as check:
            check(isinstance(noise_multiplier, (int, float)) and not isinstance(noise_multiplier, bool) and noise_multiplier >= 0,
                  "noise_multiplier", noise_multiplier, "a number >= 0")  # fmt: skip
            check(isinstance(max_grad_norm, (int, float)) and not isinstance(max_grad_norm, bool) and max_grad_norm > 0,
                  "max_grad_norm", max_grad_norm, "a number > 0")  # fmt: skip
            check(isinstance(delta, (int, float)) and 0 < delta < 1, "delta", delta, "in (0, 1)")
        self.noise_multiplier, self.max_grad_norm, self.delta = float(noise_multiplier), float(max_grad_norm), float(delta)

    def setup(self, context: SetupContext) -> None:
        from lightning_asyncfl.privacy.accounting import _rdp_accountant

        _rdp_accountant()  # Opacus is there, or a clear ImportError before training

    def before_training(self, ctx: LocalTraining) -> None:
        from opacus import GradSampleModule

        self._close()
        self._hooks = GradSampleModule(ctx.module, loss_reduction="mean", batch_first=True)
        self._generator = torch.Generator().manual_seed(seeding.derive_seed(ctx.job.seed, DPSGD_STREAM))
        self._parameters = [p for p in ctx.module.parameters() if p.requires_grad]

    def after_backward(self, ctx: LocalTraining) -> None:
        samples = [p.grad_sample for p in self._parameters]
        grads = clipped_noisy_gradients(samples, self.max_grad_norm, self.noise_multiplier * self.max_grad_norm, self._generator)
        for p, g in zip(self._parameters, grads):
            p.grad = g.to(p.dtype)
            p.grad_sample = None

    def after_training(self, ctx: LocalTraining) -> dict[str, Tensor]:
        self._close()
        before = float(ctx.client_state[STEPS_KEY]) if STEPS_KEY in ctx.client_state else 0.0
        ctx.client_state[STEPS_KEY] = torch.tensor(before + ctx.steps, dtype=torch.float64)
        return {}

    def _close(self) -> None:
        hooks = getattr(self, "_hooks", None)
        if hooks is not None:
            hooks._close()  # removes the hooks and the per-sample gradients from the module
            self._hooks = None

    def epsilon(self, client_states: dict[int, dict[str, Tensor]], num_samples: list[int] | tuple[int, ...], batch_size: int) -> float:
        """The largest ε over clients: RDP of each client's steps at q = batch_size / n_k (Opacus)."""
        from lightning_asyncfl.privacy.accounting import _rdp_accountant

        if self.noise_multiplier == 0 and any(STEPS_KEY in s for s in client_states.values()):
            return float("inf")
        worst = 0.0
        for client, state in client_states.items():
            steps = int(float(state.get(STEPS_KEY, 0)))
            if steps:
                accountant = _rdp_accountant()
                accountant.history = [(self.noise_multiplier, min(1.0, batch_size / num_samples[client]), steps)]
                worst = max(worst, float(accountant.get_epsilon(delta=self.delta)))
        return worst

    def __getstate__(self) -> dict[str, Any]:  # a worker's copy carries no hooks
        return {k: v for k, v in self.__dict__.items() if k not in ("_hooks", "_generator", "_parameters")}

    def __repr__(self) -> str:
        return f"DPSGD(noise_multiplier={self.noise_multiplier}, max_grad_norm={self.max_grad_norm}, delta={self.delta})"
