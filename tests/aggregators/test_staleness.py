from __future__ import annotations

import pytest

from lightning_asyncfl.aggregators.staleness import Constant, Hinge, Polynomial, make_staleness
from lightning_asyncfl.errors import InvalidValue


@pytest.mark.parametrize("tau", [0, 1, 7, 1000])
def test_constant_is_one(tau):
    assert Constant().weight(tau) == 1.0


@pytest.mark.parametrize(
    ("a", "tau", "expected"),
    [(0.5, 0, 1.0), (0.5, 3, 0.5), (0.5, 8, 1 / 3), (1.0, 4, 0.2), (2.0, 1, 0.25), (0.0, 9, 1.0)],
)
def test_polynomial_is_tau_plus_one_to_the_minus_a(a, tau, expected):
    assert Polynomial(a=a).weight(tau) == pytest.approx(expected, rel=1e-15, abs=0)
    assert Polynomial(a=a).weight(tau) == (tau + 1) ** (-a)


@pytest.mark.parametrize(
    ("a", "b", "tau", "expected"),
    [(10, 4, 0, 1.0), (10, 4, 4, 1.0), (10, 4, 5, 1 / 11), (10, 4, 6, 1 / 21), (0.5, 2, 4, 0.5), (0, 1, 50, 1.0)],
)
def test_hinge_is_one_up_to_b_then_one_over_a_times_excess_plus_one(a, b, tau, expected):
    assert Hinge(a=a, b=b).weight(tau) == expected


def test_make_staleness_builds_each_function_with_its_parameters():
    assert isinstance(make_staleness("constant", a=-5, b=-5), Constant)  # constant ignores a and b
    assert make_staleness("polynomial", a=1.5, b=0).a == 1.5
    hinge = make_staleness("hinge", a=2, b=3)
    assert (hinge.a, hinge.b) == (2.0, 3.0)


def test_unknown_staleness_name_lists_the_choices():
    with pytest.raises(InvalidValue, match=r"staleness must be one of: constant, polynomial, hinge, got 'linear'"):
        make_staleness("linear", a=1, b=1)


@pytest.mark.parametrize(("make", "key"), [(lambda: Polynomial(a=-1), "a"), (lambda: Hinge(a=1, b=-2), "b"), (lambda: Hinge(a=-0.1, b=1), "a")])
def test_negative_parameters_are_rejected_with_their_key(make, key):
    with pytest.raises(InvalidValue) as info:
        make()
    assert info.value.key == key
    assert "must be a finite number >= 0" in str(info.value)


def test_negative_staleness_is_an_error():
    with pytest.raises(ValueError, match="staleness must be >= 0"):
        Polynomial(a=1).weight(-1)
