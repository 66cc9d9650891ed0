"""Compression of client uploads: what a client sends instead of its full-precision delta.

A compressor maps a client's delta Δ (flat, trained − base) to what travels on the wire
and back to the Δ̂ the server receives; :meth:`Compressor.payload_bytes` is the exact size
of that message, in closed form, which the system model charges as upload bytes and time.

- ``fp16`` / ``bf16``: Δ cast to half precision, 2 bytes a coordinate.
- ``qsgd`` (Alistarh, Grubic, Li, Tomioka, Vojnovic. "QSGD: Communication-Efficient SGD via
  Gradient Quantization and Encoding", NeurIPS 2017, https://arxiv.org/abs/1610.02132,
  Sec. 3.1): per bucket v of ``bucket_size`` coordinates, with s = 2^b − 1 levels,

      Q_s(v_i) = ||v||₂ · sgn(v_i) · ξ_i(v, s),   ξ_i = (l + 1)/s with probability |v_i| s/||v||₂ − l, else l/s,

  l = ⌊|v_i| s/||v||₂⌋. Unbiased, E[Q_s(v)] = v, with E||Q_s(v) − v||² ≤ min(n/s², √n/s)·||v||²
  (Lemma 3.1). On the wire: one float32 norm per bucket, and per coordinate a sign bit and
  b bits of level (fixed width; the paper's Elias coding is smaller still).
- ``topk`` (Stich, Cordonnier, Jaggi. "Sparsified SGD with Memory", NeurIPS 2018,
  https://arxiv.org/abs/1809.07599; Seide et al. 2014 for error feedback): the k = ⌈ρ·d⌉
  coordinates of largest magnitude, k·(value bytes + 4 index bytes) on the wire.

Error feedback (``error_feedback=true``): the client adds what its previous compression
dropped, e = x − Δ̂, to its next delta before compressing; e is the client's own state,
kept by :class:`~lightning_asyncfl.privacy.UploadChannel` and checkpointed with the run.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_asyncfl.errors import checking

#: bytes of one coordinate index of a sparse message (int32)
INDEX_BYTES = 4
#: bytes of one QSGD bucket norm (float32)
NORM_BYTES = 4


class Compressor:
    """No compression (``compression=none``): Δ travels at the model's dtype.

    Args:
        error_feedback: keep what compression dropped on the client and add it to its next delta.
    """

    def __init__(self, *, error_feedback: bool = False) -> None:
        with checking() as check:
            check(isinstance(error_feedback, bool), "error_feedback", error_feedback, "true or false")
        self.error_feedback = bool(error_feedback)

    @property
    def identity(self) -> bool:
        """Whether Δ̂ = Δ exactly (nothing is compressed)."""
        return type(self) is Compressor

    def payload_bytes(self, numel: int, element_size: int) -> int:
        """Bytes on the wire for a flat delta of ``numel`` values of ``element_size`` bytes."""
        return numel * element_size

    def roundtrip(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Δ̂: what the server decodes from the message the client makes of ``x``; ``generator``
        is the job's own stream (QSGD's coin flips)."""
        return x

    def _args(self) -> dict[str, object]:
        return {"error_feedback": self.error_feedback}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in self._args().items()) + ")"


class HalfPrecision(Compressor):
    """Δ sent as float16 or bfloat16 (2 bytes a coordinate).

    Args:
        dtype: ``float16`` or ``bfloat16``.
        error_feedback: keep the rounding error on the client for its next delta.
    """

    DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}

    def __init__(self, *, dtype: str = "float16", error_feedback: bool = False) -> None:
        with checking() as check:
            check(dtype in self.DTYPES, "dtype", dtype, "one of: " + ", ".join(self.DTYPES))
            super().__init__(error_feedback=error_feedback)
        self.dtype = dtype

    def payload_bytes(self, numel: int, element_size: int) -> int:
        return numel * 2

    def roundtrip(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return x.to(self.DTYPES[self.dtype]).to(x.dtype)

    def _args(self) -> dict[str, object]:
        return {"dtype": self.dtype, **super()._args()}


def qsgd_quantize(x: Tensor, bits: int, bucket_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """QSGD's message for ``x``: per-bucket norms, signs (bool) and levels l + Bernoulli in {0..s}, s = 2^bits − 1.

    The coin flips are drawn on the CPU from ``generator`` (the same bits whatever the device).
    """
    s = (1 << bits) - 1
    d = x.numel()
    buckets = math.ceil(d / bucket_size) if d else 0
    padded = torch.zeros(buckets * bucket_size, dtype=x.dtype, device=x.device)
    padded[:d] = x
    v = padded.view(buckets, bucket_size)
    norms = torch.linalg.vector_norm(v, dim=1)
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    scaled = v.abs() / safe[:, None] * s  # in [0, s]
    low = scaled.floor()
    u = torch.rand(scaled.shape, generator=generator, dtype=scaled.dtype).to(x.device)
    levels = low + (u < scaled - low).to(scaled.dtype)
    return norms, (v < 0), levels.to(torch.int64)


def qsgd_decode(norms: Tensor, negative: Tensor, levels: Tensor, bits: int, numel: int) -> Tensor:
    """Q_s(v) from QSGD's message: ||v|| · sgn · level / s, flat, the first ``numel`` values."""
    s = (1 << bits) - 1
    sign = 1.0 - 2.0 * negative.to(norms.dtype)
    return (norms[:, None] * sign * levels.to(norms.dtype) / s).reshape(-1)[:numel]


class QSGD(Compressor):
    """Stochastic uniform quantization with ``bits`` bits of level per coordinate, unbiased.

    Args:
        bits: b, levels s = 2^b − 1 (1 to 16).
        bucket_size: coordinates that share one norm (the paper's bucketing; >= 1).
        error_feedback: keep the quantization error on the client for its next delta.
    """

    def __init__(self, *, bits: int = 4, bucket_size: int = 512, error_feedback: bool = False) -> None:
        with checking() as check:
            check(isinstance(bits, int) and not isinstance(bits, bool) and 1 <= bits <= 16, "bits", bits, "an integer in [1, 16]")
            check(isinstance(bucket_size, int) and not isinstance(bucket_size, bool) and bucket_size >= 1, "bucket_size", bucket_size, "an integer >= 1")
            super().__init__(error_feedback=error_feedback)
        self.bits, self.bucket_size = bits, bucket_size

    def payload_bytes(self, numel: int, element_size: int) -> int:
        """NORM_BYTES per bucket + ⌈d·(1 + b)/8⌉ (a sign bit and b level bits per coordinate)."""
        return NORM_BYTES * math.ceil(numel / self.bucket_size) + math.ceil(numel * (1 + self.bits) / 8)

    def roundtrip(self, x: Tensor, generator: torch.Generator) -> Tensor:
        norms, negative, levels = qsgd_quantize(x, self.bits, self.bucket_size, generator)
        return qsgd_decode(norms, negative, levels, self.bits, x.numel())

    def _args(self) -> dict[str, object]:
        return {"bits": self.bits, "bucket_size": self.bucket_size, **super()._args()}


def topk_count(numel: int, density: float) -> int:
    """k = ⌈ρ·d⌉ (at least 1 of a non-empty vector)."""
    return min(numel, max(1, math.ceil(density * numel))) if numel else 0


def topk_sparsify(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The indices (sorted) and values of the ``k`` entries of ``x`` of largest magnitude."""
    indices = torch.topk(x.abs(), k, sorted=False).indices.sort().values
    return indices, x[indices]


class TopK(Compressor):
    """Top-k sparsification: the ⌈ρ·d⌉ largest-magnitude coordinates, with error feedback by default.

    Args:
        density: ρ in (0, 1], the share of coordinates sent.
        error_feedback: add what was dropped to the client's next delta (Stich et al. 2018).
    """

    def __init__(self, *, density: float = 0.1, error_feedback: bool = True) -> None:
        with checking() as check:
            ok = isinstance(density, (int, float)) and not isinstance(density, bool) and 0 < density <= 1
            check(ok, "density", density, "in (0, 1]")
            super().__init__(error_feedback=error_feedback)
        self.density = float(density)

    def payload_bytes(self, numel: int, element_size: int) -> int:
        """k · (value bytes + INDEX_BYTES)."""
        return topk_count(numel, self.density) * (element_size + INDEX_BYTES)

    def roundtrip(self, x: Tensor, generator: torch.Generator) -> Tensor:
        indices, values = topk_sparsify(x, topk_count(x.numel(), self.density))
        out = torch.zeros_like(x)
        out[indices] = values
        return out

    def _args(self) -> dict[str, object]:
        return {"density": self.density, **super()._args()}
