"""User-level differential privacy for asynchronous and buffered aggregation.

DP-FedAvg (McMahan, Ramage, Talwar, Zhang. "Learning Differentially Private Recurrent
Language Models", ICLR 2018, https://arxiv.org/abs/1710.06963, Algorithm 1) in its
buffered form (DP-FedBuff: Nguyen et al. 2022, https://arxiv.org/abs/2106.06639, Sec. 6).
Every client's delta is clipped to norm C,

    clip(Δ) = Δ · min(1, C / ||Δ||₂),

and Gaussian noise of std z·C is added

- ``mode=central`` (a trusted server): once per aggregation, to the weighted combination
  of the buffered clipped deltas. For an aggregator that combines the deltas linearly with
  coefficients c_i (FedBuff: η_g s(τ_i)/K; FedAsync: α s(τ); FedAvg: n_i/Σn), N(0, z²C²)
  is added to the delta of the update of largest coefficient c_max, so the model moves by
  noise of std z·C·c_max: the Gaussian mechanism calibrated to one client's largest
  possible influence C·c_max. A client present m times in one buffer influences it by at
  most C·Σ_{its updates} c_i, so its noise multiplier for that aggregation is
  z·c_max / Σ_{its updates} c_i (z when it is there once).
- ``mode=local``: by each client, N(0, z²C²) on its own clipped delta before it leaves the
  device; every release is then a Gaussian mechanism with multiplier z on its own.

The privacy spent is computed by :class:`~lightning_asyncfl.privacy.accounting.UserLevelAccountant`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_asyncfl.errors import checking

MODES = ["central", "local"]


def clip_to_norm(x: Tensor, clip_norm: float | None) -> Tensor:
    """``x · min(1, C/||x||₂)``, its norm never above C (at ``x``'s dtype, after rounding);
    ``x`` itself (not a copy) when it is within the norm or C is None."""
    if clip_norm is None:
        return x
    norm = float(torch.linalg.vector_norm(x))
    if norm <= clip_norm:
        return x
    factor = clip_norm / norm
    y = x * factor
    while float(torch.linalg.vector_norm(y)) > clip_norm:  # rounding left it a few ulps long: never above C
        factor *= 1 - 2.0**-20
        y = x * factor
    return y


def gaussian_noise(shape: torch.Size, std: float, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
    """N(0, std²) per coordinate, drawn on the CPU from ``generator``."""
    return torch.randn(shape, generator=generator, dtype=dtype) * std


class UserLevelDP:
    """Clip each client's delta to ``clip_norm`` and add Gaussian noise of std z·C.

    Args:
        mode: ``central`` (noise once per aggregation, at the server) or ``local`` (by each client).
        clip_norm: C > 0; null: no clipping (only with noise_multiplier 0: without a bound
            noise protects nothing).
        noise_multiplier: z >= 0.
        delta: δ in (0, 1) of the reported (ε, δ).
        target_epsilon: stop the run before an aggregation would spend more than this ε (null: no budget).
    """

    def __init__(self, *, mode: str = "central", clip_norm: float | None = 1.0, noise_multiplier: float = 1.0,
                 delta: float = 1e-5, target_epsilon: float | None = None) -> None:
        def real(v: object) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        with checking() as check:
            check(mode in MODES, "mode", mode, "one of: " + ", ".join(MODES))
            check(clip_norm is None or (real(clip_norm) and clip_norm > 0), "clip_norm", clip_norm, "null or a finite number > 0")
            check(real(noise_multiplier) and noise_multiplier >= 0, "noise_multiplier", noise_multiplier, "a finite number >= 0")
            if clip_norm is None and real(noise_multiplier) and noise_multiplier > 0:
                check(False, "clip_norm", clip_norm, "a finite number > 0 when noise_multiplier > 0 (noise is z times the clip norm)")
            check(real(delta) and 0 < delta < 1, "delta", delta, "in (0, 1)")
            check(target_epsilon is None or (real(target_epsilon) and target_epsilon > 0), "target_epsilon", target_epsilon, "null or a finite number > 0")
        self.mode = mode
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.noise_multiplier = float(noise_multiplier)
        self.delta = float(delta)
        self.target_epsilon = None if target_epsilon is None else float(target_epsilon)

    @property
    def noise_std(self) -> float:
        """z·C (0 without noise)."""
        return 0.0 if self.noise_multiplier == 0 else self.noise_multiplier * float(self.clip_norm)

    def __repr__(self) -> str:
        return (f"UserLevelDP(mode={self.mode!r}, clip_norm={self.clip_norm}, noise_multiplier={self.noise_multiplier}, "
                f"delta={self.delta}, target_epsilon={self.target_epsilon})")
