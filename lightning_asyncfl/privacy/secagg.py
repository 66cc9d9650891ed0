"""Secure aggregation (SecAgg) over a buffer, simulated in exact modular arithmetic.

Bonawitz, Ivanov, Kreuter, Marcedone, McMahan, Patel, Ramage, Segal, Seth. "Practical
Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017,
https://eprint.iacr.org/2017/281, Sec. 4 (double masking). Each client v of a cohort
encodes its input in fixed point in the ring Z_R, R = 2^ring_bits,

    x̄_v = round(x_v · 2^f) mod R,

and sends the masked input

    y_v = x̄_v + PRG(b_v) + Σ_{u<v} PRG(s_{u,v}) − Σ_{u>v} PRG(s_{u,v})   (mod R)

with a self-mask seed b_v and a pairwise seed s_{u,v} shared with every other member u of
the cohort (from a Diffie–Hellman key agreement; here drawn from the run's seeded stream
keyed by the two job ids). The pairwise masks cancel in the sum. The server adds the y_v
of the survivors V; for each survivor it learns b_v, and for each client u that left
after the masks were fixed (a dropout, a failed or rejected job) it learns u's key s_u,
both from the survivors' Shamir shares (at least ``threshold`` of them), so it removes
PRG(b_v) for v ∈ V and the pairwise masks between dropouts and survivors:

    Σ_{v∈V} x̄_v = Σ_{v∈V} y_v − Σ_{v∈V} PRG(b_v) − Σ_{v∈V, u∉V} ±PRG(s_{u,v})   (mod R).

The shares themselves are not simulated (their reconstruction is: it needs ``threshold``
survivors); their bytes are counted. The sum is exact: the fixed-point sum of the inputs,
decoded once, as long as |Σ x̄| < R/2 (each input coordinate is clamped to
±(R/2 − 1)/(n·2^f) first, and the clamped coordinates are counted).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_asyncfl import seeding
from lightning_asyncfl.errors import checking

#: the seeded stream of the masks' seeds (stands in for the clients' key agreement)
SECAGG_STREAM = 22
#: bytes of one public key (X25519)
KEY_BYTES = 32
#: bytes of one Shamir share of a 32-byte seed (the share and the evaluation point)
SHARE_BYTES = 36
#: bytes an authenticated encryption adds to one message (12-byte nonce, 16-byte tag)
AEAD_BYTES = 28


def exchange_bytes(cohort: int) -> int:
    """Bytes one client sends and receives for SecAgg's key and share rounds in a cohort of n.

    AdvertiseKeys: sends 2 public keys, receives the 2n of the cohort; ShareKeys: sends and
    receives n − 1 encrypted messages of 2 shares each; Unmasking: sends one share for every
    other member (b_v of a survivor or s_u of a dropout).
    """
    n = cohort
    advertise = 2 * KEY_BYTES + 2 * n * KEY_BYTES
    share = 2 * (n - 1) * (2 * SHARE_BYTES + AEAD_BYTES)
    unmask = (n - 1) * SHARE_BYTES
    return advertise + share + unmask


def prg(seed: int, numel: int, ring_bits: int) -> Tensor:
    """PRG(seed): ``numel`` uniform ring elements in [0, 2^ring_bits), int64."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 1 << ring_bits, (numel,), generator=generator, dtype=torch.int64)


class SecureAggregation:
    """Pairwise-masked summation of a buffer's updates (``privacy.secagg``).

    Args:
        ring_bits: R = 2^ring_bits (8 to 62); the masked vector travels at ring_bits bits a coordinate.
        fractional_bits: f, the fixed-point scale 2^f (< ring_bits).
        threshold: the share of the cohort that must survive for the server to unmask, in (0, 1]
            (Shamir threshold t = ⌈threshold·n⌉; SecAgg needs t > n/2 against a malicious server).
    """

    def __init__(self, *, ring_bits: int = 48, fractional_bits: int = 24, threshold: float = 0.5) -> None:
        with checking() as check:
            ok_ring = isinstance(ring_bits, int) and not isinstance(ring_bits, bool) and 8 <= ring_bits <= 62
            check(ok_ring, "ring_bits", ring_bits, "an integer in [8, 62]")
            ok_f = isinstance(fractional_bits, int) and not isinstance(fractional_bits, bool) and 0 <= fractional_bits < (ring_bits if ok_ring else 62)
            check(ok_f, "fractional_bits", fractional_bits, f"an integer in [0, ring_bits={ring_bits})")
            check(isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and 0 < threshold <= 1, "threshold", threshold, "in (0, 1]")
        self.ring_bits, self.fractional_bits, self.threshold = ring_bits, fractional_bits, float(threshold)
        self.seed = 0
        self.clamped = 0  # coordinates clamped to the representable range, over the run
        self.last_received: list[Tensor] = []  # what the server received at the last aggregation (for inspection)

    @property
    def modulus(self) -> int:
        return 1 << self.ring_bits

    def payload_bytes(self, numel: int) -> int:
        """Bytes of one masked input: ⌈d · ring_bits / 8⌉."""
        return math.ceil(numel * self.ring_bits / 8)

    def survivors_needed(self, cohort: int) -> int:
        """Shamir threshold t = ⌈threshold · n⌉ (at least 1)."""
        return max(1, math.ceil(self.threshold * cohort - 1e-9))

    def encode(self, x: Tensor, cohort: int) -> Tensor:
        """x̄ = round(x · 2^f) mod R, each coordinate clamped to ±(R/2 − 1)/(n·2^f) first."""
        limit = ((1 << (self.ring_bits - 1)) - 1) // max(cohort, 1)
        fixed = torch.round(x.double().cpu() * float(1 << self.fractional_bits))
        clamped = fixed.clamp(-limit, limit)
        self.clamped += int((clamped != fixed).sum())
        return clamped.to(torch.int64) % self.modulus

    def decode(self, total: Tensor) -> Tensor:
        """The signed fixed-point value of ring elements, as float64."""
        half = 1 << (self.ring_bits - 1)
        signed = torch.where(total >= half, total - self.modulus, total)
        return signed.double() / float(1 << self.fractional_bits)

    def _pair_seed(self, u: int, v: int) -> int:
        a, b = min(u, v), max(u, v)
        return seeding.derive_seed(self.seed, SECAGG_STREAM, 0, a, b)

    def _self_seed(self, v: int) -> int:
        return seeding.derive_seed(self.seed, SECAGG_STREAM, 1, v)

    def mask(self, job: int, encoded: Tensor, cohort: Sequence[int]) -> Tensor:
        """y_v of client job ``job``: its encoded input plus its self mask and its pairwise masks with ``cohort``."""
        numel, r = encoded.numel(), self.ring_bits
        y = (encoded + prg(self._self_seed(job), numel, r)) % self.modulus
        for other in cohort:
            if other == job:
                continue
            pair = prg(self._pair_seed(job, other), numel, r)
            y = (y + pair) % self.modulus if job < other else (y - pair) % self.modulus
        return y

    def unmask(self, received: dict[int, Tensor], dropped: Sequence[int]) -> Tensor:
        """Σ x̄_v over the survivors (keys of ``received``) from their masked inputs alone, removing
        the survivors' self masks and the pairwise masks they share with ``dropped``."""
        numel = next(iter(received.values())).numel()
        total = torch.zeros(numel, dtype=torch.int64)
        for y in received.values():
            total = (total + y) % self.modulus
        for v in received:
            total = (total - prg(self._self_seed(v), numel, self.ring_bits)) % self.modulus
            for u in dropped:
                pair = prg(self._pair_seed(v, u), numel, self.ring_bits)
                total = (total - pair) % self.modulus if v < u else (total + pair) % self.modulus
        return total

    def secure_sum(self, inputs: dict[int, Tensor], dropped: Sequence[int]) -> Tensor | None:
        """The exact fixed-point sum of ``inputs`` ({job id: flat input}) as float64, computed
        from masked inputs only; None when fewer than the threshold of the cohort survived."""
        cohort = sorted([*inputs, *dropped])
        if len(inputs) < self.survivors_needed(len(cohort)):
            return None
        received = {job: self.mask(job, self.encode(x, len(inputs)), cohort) for job, x in sorted(inputs.items())}
        self.last_received = list(received.values())
        return self.decode(self.unmask(received, dropped))

    def __repr__(self) -> str:
        return f"SecureAggregation(ring_bits={self.ring_bits}, fractional_bits={self.fractional_bits}, threshold={self.threshold})"
