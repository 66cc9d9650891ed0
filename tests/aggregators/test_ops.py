"""The shared kernels against the formulas written directly with torch."""

from __future__ import annotations

import pytest
import torch

from lightning_asyncfl.aggregators.ops import normalized_weighted_sum, staleness_weighted_mean, weighted_mean, weighted_sum


def _vectors(k=4, p=7, dtype=torch.float64):
    generator = torch.Generator().manual_seed(3)
    return list(torch.randn(k, p, generator=generator, dtype=dtype).unbind(0))


def test_weighted_sum_is_sum_of_weights_times_vectors():
    vectors, weights = _vectors(), [0.5, -2.0, 3.0, 0.25]

    expected = (torch.tensor(weights, dtype=torch.float64)[:, None] * torch.stack(vectors)).sum(0)

    torch.testing.assert_close(weighted_sum(vectors, weights), expected)
    torch.testing.assert_close(weighted_sum(vectors), torch.stack(vectors).sum(0))


def test_weighted_sum_on_exact_values_and_inputs_untouched():
    vectors = [torch.tensor([1.0, 2.0]), torch.tensor([4.0, -8.0])]

    result = weighted_sum(vectors, [0.5, 0.25])

    assert result.tolist() == [1.5, -1.0]
    assert vectors[0].tolist() == [1.0, 2.0] and result is not vectors[0]


def test_staleness_weighted_mean_divides_by_the_count_not_the_weights():
    vectors, s = _vectors(), [1.0, 0.5, 0.25, 1 / 3]

    expected = (torch.tensor(s, dtype=torch.float64)[:, None] * torch.stack(vectors)).mean(0)

    torch.testing.assert_close(staleness_weighted_mean(vectors, s), expected)
    assert staleness_weighted_mean([torch.tensor([2.0, 4.0]), torch.tensor([4.0, -8.0])], [1.0, 0.5]).tolist() == [2.0, 0.0]


def test_weighted_mean_normalises_by_the_weights_and_scales_without_normalising():
    vectors, w, s = _vectors(), [10.0, 30.0, 20.0, 40.0], [1.0, 0.5, 0.25, 1.0]
    stacked = torch.stack(vectors)

    expected = (torch.tensor(w, dtype=torch.float64)[:, None] * torch.tensor(s, dtype=torch.float64)[:, None] * stacked).sum(0) / sum(w)
    plain = (torch.tensor(w, dtype=torch.float64)[:, None] * stacked).sum(0) / sum(w)

    torch.testing.assert_close(weighted_mean(vectors, w, s), expected)
    torch.testing.assert_close(weighted_mean(vectors, w), plain)


def test_normalized_weighted_sum_is_a_convex_combination():
    vectors, w = _vectors(), [1.0, 2.0, 3.0, 4.0]

    expected = (torch.tensor(w, dtype=torch.float64)[:, None] / 10.0 * torch.stack(vectors)).sum(0)

    torch.testing.assert_close(normalized_weighted_sum(vectors, w), expected)
    assert normalized_weighted_sum([torch.tensor([3.0])], [7.0]).tolist() == [3.0]


@pytest.mark.parametrize("kernel", [weighted_mean, normalized_weighted_sum])
def test_a_non_positive_total_weight_is_refused(kernel):
    with pytest.raises(ValueError, match="positive total weight"):
        kernel([torch.ones(2), torch.ones(2)], [0.0, 0.0])


def test_mismatched_lengths_and_empty_input_are_refused():
    with pytest.raises(ValueError, match="2 vectors need as many weights, got 1"):
        weighted_sum([torch.ones(2), torch.ones(2)], [1.0])
    with pytest.raises(ValueError, match="at least one vector"):
        weighted_sum([])
