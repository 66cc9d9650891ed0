"""Compression of uploads: exact byte counts, QSGD's unbiasedness, top-k with error feedback."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_asyncfl.privacy import QSGD, Compressor, HalfPrecision, TopK, UploadChannel
from lightning_asyncfl.privacy.compression import qsgd_decode, qsgd_quantize
from lightning_asyncfl.state import ClientUpdate, Job, Layout, ModelState


def _state(values: torch.Tensor) -> ModelState:
    return ModelState(values, Layout.from_tensors({"w": values}, num_parameters=1))


def _update(job_id: int, client: int, base: torch.Tensor, trained: torch.Tensor) -> ClientUpdate:
    job = Job(job_id=job_id, client_id=client, base_version=0, seed=job_id, dispatch_time=0.0, arrival_time=1.0)
    return ClientUpdate(job=job, state=_state(trained), base=_state(base), num_samples=10)


@pytest.mark.parametrize(
    ("compressor", "expected"),
    [
        (Compressor(), 1000 * 4),
        (HalfPrecision(dtype="float16"), 1000 * 2),
        (HalfPrecision(dtype="bfloat16"), 1000 * 2),
        (QSGD(bits=4, bucket_size=512), 4 * 2 + math.ceil(1000 * 5 / 8)),  # 2 bucket norms + (sign + 4 bits) a coordinate
        (QSGD(bits=1, bucket_size=1000), 4 * 1 + 250),
        (TopK(density=0.1), 100 * (4 + 4)),  # k = 100 values and int32 indices
        (TopK(density=0.0015), 2 * (4 + 4)),  # k = ceil(1.5)
    ],
)
def test_payload_bytes_are_the_closed_form(compressor, expected):
    assert compressor.payload_bytes(1000, 4) == expected


def test_half_precision_rounds_to_the_dtype():
    x = torch.tensor([1.0, 1.0 + 2**-12, 3.0e-8, 70000.0])
    # 3e-8 rounds to the smallest float16 subnormal 2^-24; 70000 overflows to inf
    assert torch.equal(HalfPrecision(dtype="float16").roundtrip(x, torch.Generator()), torch.tensor([1.0, 1.0, 2.0**-24, float("inf")]))
    assert torch.equal(HalfPrecision(dtype="bfloat16").roundtrip(x, torch.Generator()), x.bfloat16().float())


def test_qsgd_levels_are_integers_in_0_to_s_and_decode_to_norm_times_level_over_s():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    norms, negative, levels = qsgd_quantize(x, 3, 100, torch.Generator().manual_seed(1))
    assert norms.shape == (10,) and levels.min() >= 0 and levels.max() <= 7
    decoded = qsgd_decode(norms, negative, levels, 3, 1000)
    bucket = 4
    expected = norms[bucket] * torch.where(negative[bucket], -1.0, 1.0) * levels[bucket].float() / 7
    assert torch.equal(decoded[400:500], expected)
    assert torch.equal(negative.reshape(-1)[:1000], x < 0)


def test_qsgd_is_unbiased_within_its_variance_bound():
    # Prepare: QSGD with s = 3 levels on buckets of 16; each coordinate is ||v|| / s times a Bernoulli
    x = torch.randn(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    q, n, s = QSGD(bits=2, bucket_size=16), 20_000, 3
    gen = torch.Generator().manual_seed(2)

    # Execute: n independent draws at once (the buckets of n copies of x are quantized independently)
    draws = q.roundtrip(x.repeat(n), gen).view(n, 64)

    # Assert: the mean is within 5 standard errors of x, a Bernoulli's variance being <= 1/4
    norms = torch.linalg.vector_norm(x.view(4, 16), dim=1).repeat_interleave(16)
    std_error = norms / s * 0.5 / math.sqrt(n)
    assert bool(((draws.mean(0) - x).abs() <= 5 * std_error).all())
    # and E||Q(v) - v||^2 <= min(n/s^2, sqrt(n)/s) ||v||^2 per bucket (Alistarh et al. 2017, Lemma 3.1)
    err = ((draws - x) ** 2).view(n, 4, 16).sum(2).mean(0)
    bound = min(16 / s**2, math.sqrt(16) / s) * torch.linalg.vector_norm(x.view(4, 16), dim=1) ** 2
    assert bool((err <= bound).all())


def test_topk_keeps_exactly_k_largest_and_the_residual_is_what_was_dropped():
    # Prepare
    channel = UploadChannel(compression=TopK(density=0.1))
    base = torch.zeros(50)
    x1 = torch.randn(50, generator=torch.Generator().manual_seed(0))
    x2 = torch.randn(50, generator=torch.Generator().manual_seed(1))

    # Execute: two uploads of client 3
    first = channel.on_upload(_update(0, 3, base, x1))
    residual = channel.residuals[3].clone()
    second = channel.on_upload(_update(1, 3, base, x2))

    # Assert: k = 5 entries sent, the largest, and residual = x - sent
    sent = first.delta
    kept = sent.nonzero().flatten()
    assert kept.numel() == 5
    assert set(kept.tolist()) == set(x1.abs().topk(5).indices.tolist())
    assert torch.equal(sent[kept], x1[kept])
    assert torch.equal(residual, x1 - sent)
    # the next upload compresses x2 + residual
    y = x2 + residual
    assert set(second.delta.nonzero().flatten().tolist()) == set(y.abs().topk(5).indices.tolist())
    assert torch.equal(channel.residuals[3], y - second.delta)


def test_error_feedback_state_round_trips_through_state_dict():
    channel = UploadChannel(compression=TopK(density=0.2))
    channel.on_upload(_update(0, 1, torch.zeros(10), torch.arange(10.0)))
    copy = UploadChannel(compression=TopK(density=0.2))
    copy.load_state_dict(channel.state_dict())
    assert torch.equal(copy.residuals[1], channel.residuals[1])


def test_nothing_set_passes_the_update_through_unchanged():
    update = _update(0, 0, torch.zeros(4), torch.ones(4))
    assert UploadChannel().on_upload(update) is update


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TopK(density=0), "density must be in (0, 1], got 0"),
        (lambda: QSGD(bits=0), "bits must be an integer in [1, 16], got 0"),
        (lambda: HalfPrecision(dtype="float8"), "dtype must be one of: float16, bfloat16, got 'float8'"),
    ],
)
def test_bad_settings_name_key_value_and_allowed(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        make()
