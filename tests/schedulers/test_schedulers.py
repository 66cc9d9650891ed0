"""Schedulers: ticks, dispatch counts, round gating, determinism, errors and state."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_asyncfl.errors import InvalidValue
from lightning_asyncfl.schedulers import (
    ConcurrencyScheduler,
    RandomIntervalScheduler,
    RoundScheduler,
    Scheduler,
)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _ready(scheduler: Scheduler, num_clients: int = 20) -> Scheduler:
    scheduler.setup(num_clients)
    return scheduler


# -- RandomIntervalScheduler ---------------------------------------------------------------


def test_interval_ticks_are_exact():
    # Prepare
    scheduler = _ready(RandomIntervalScheduler(interval=5.0, fraction=0.1))
    idle = list(range(20))
    rng = _rng()

    # Execute / Assert
    assert scheduler.next_wakeup(0.0) == 0.0
    assert len(scheduler.schedule(0.0, idle, [], 0, rng)) == 2
    assert scheduler.schedule(0.0, idle, [], 0, rng) == []
    assert scheduler.schedule(2.5, idle, [], 0, rng) == []
    assert scheduler.next_wakeup(2.5) == 5.0
    assert len(scheduler.schedule(5.0, idle, [], 0, rng)) == 2
    assert scheduler.next_wakeup(5.0) == 10.0


def test_interval_skipped_ticks_fire_once():
    scheduler = _ready(RandomIntervalScheduler(interval=5.0, fraction=0.5))
    scheduler.schedule(0.0, [0, 1], [], 0, _rng())

    chosen = scheduler.schedule(12.0, [0, 1, 2, 3], [], 0, _rng())

    assert len(chosen) == 2
    assert scheduler.next_wakeup(12.0) == 15.0


def test_interval_fraction_rounding_is_exact():
    # Prepare
    scheduler = _ready(RandomIntervalScheduler(interval=1.0, fraction=0.1))

    # Execute
    from_twenty = scheduler.schedule(0.0, list(range(20)), [], 0, _rng())
    from_five = scheduler.schedule(1.0, [1, 3, 5, 7, 9], [], 0, _rng())
    from_none = scheduler.schedule(2.0, [], list(range(20)), 0, _rng())

    # Assert
    assert len(from_twenty) == 2
    assert len(from_five) == 1 and from_five[0] in {1, 3, 5, 7, 9}
    assert from_none == []
    assert scheduler.next_wakeup(2.0) == 3.0


def test_interval_ticks_robust_to_float_rounding():
    scheduler = _ready(RandomIntervalScheduler(interval=0.1, fraction=1.0))
    rng = _rng()
    fired = []

    for _ in range(50):
        now = scheduler.next_wakeup(fired[-1] if fired else 0.0)
        assert scheduler.schedule(now, [0], [], 0, rng) == [0]
        assert scheduler.schedule(now, [0], [], 0, rng) == []
        fired.append(now)

    assert all(b > a for a, b in zip(fired, fired[1:]))


# -- ConcurrencyScheduler ------------------------------------------------------------------


def test_concurrency_tops_up_to_exactly_c():
    # Prepare
    scheduler = _ready(ConcurrencyScheduler(concurrency=5))
    in_flight = [0, 1]
    idle = list(range(2, 20))

    # Execute
    chosen = scheduler.schedule(3.0, idle, in_flight, 4, _rng())

    # Assert
    assert len(chosen) == 3
    assert chosen == sorted(chosen) and set(chosen) <= set(idle)
    assert all(type(c) is int for c in chosen)
    assert scheduler.schedule(3.0, idle, [0, 1, 2, 3, 4], 4, _rng()) == []
    assert scheduler.schedule(0.0, [7, 8], [], 0, _rng()) == [7, 8]


# -- RoundScheduler ------------------------------------------------------------------------


def test_round_waits_for_in_flight_empty_and_version_change():
    # Prepare
    scheduler = _ready(RoundScheduler(clients_per_round=4))
    idle = list(range(20))
    rng = _rng()

    # Execute / Assert
    first = scheduler.schedule(0.0, idle, [], 0, rng)
    assert len(first) == 4
    rest = [c for c in idle if c not in first]
    assert scheduler.schedule(1.0, rest, first[1:], 0, rng) == []  # in flight
    assert scheduler.schedule(2.0, idle, [], 0, rng) == []  # not aggregated yet
    assert scheduler.schedule(2.0, rest, first[:1], 1, rng) == []  # aggregated, one in flight
    assert len(scheduler.schedule(3.0, idle, [], 1, rng)) == 4
    assert scheduler.state_dict()["last_version"] == 1


# -- shared ----------------------------------------------------------------------------------

ALL = [
    lambda: RandomIntervalScheduler(interval=1.0, fraction=0.3),
    lambda: ConcurrencyScheduler(concurrency=6),
    lambda: RoundScheduler(clients_per_round=6),
]


def _trace(scheduler: Scheduler, seed: int) -> list[list[int]]:
    scheduler.setup(20)
    rng = _rng(seed)
    return [scheduler.schedule(float(t), list(range(20)), [], t, rng) for t in range(5)]


@pytest.mark.parametrize("make", ALL)
def test_same_seed_gives_same_choices(make):
    assert _trace(make(), 3) == _trace(make(), 3)
    assert _trace(make(), 3) != _trace(make(), 4)


@pytest.mark.parametrize("make", ALL)
def test_state_dict_round_trip(make):
    # Prepare
    original = make()
    _trace(original, 1)
    state = original.state_dict()

    # Execute
    restored = make()
    restored.setup(20)
    restored.load_state_dict(state)

    # Assert
    assert restored.state_dict() == state
    assert all(isinstance(v, (int, float)) for v in state.values())
    idle = list(range(20))
    expected = original.schedule(5.0, idle, [], 5, _rng(9))
    assert restored.schedule(5.0, idle, [], 5, _rng(9)) == expected


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda: RandomIntervalScheduler(interval=0.0), "interval"),
        (lambda: RandomIntervalScheduler(interval=-1.0), "interval"),
        (lambda: RandomIntervalScheduler(fraction=0.0), "fraction"),
        (lambda: RandomIntervalScheduler(fraction=1.5), "fraction"),
        (lambda: ConcurrencyScheduler(concurrency=0), "concurrency"),
        (lambda: ConcurrencyScheduler(concurrency=2.5), "concurrency"),
        (lambda: RoundScheduler(clients_per_round=0), "clients_per_round"),
    ],
)
def test_bad_params_name_the_key(make, key):
    with pytest.raises(InvalidValue) as info:
        make()

    assert info.value.key == key


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda: ConcurrencyScheduler(concurrency=21), "concurrency"),
        (lambda: RoundScheduler(clients_per_round=21), "clients_per_round"),
    ],
)
def test_more_than_num_clients_fails_in_setup(make, key):
    scheduler = make()

    with pytest.raises(InvalidValue) as info:
        scheduler.setup(20)

    assert info.value.key == key
    assert "(20)" in str(info.value)


def test_base_rejects_clients_that_are_not_idle():
    class Bad(Scheduler):
        def _select(self, now, idle, in_flight, version, rng):
            return [idle[0], idle[0]]

    with pytest.raises(RuntimeError, match="distinct and idle"):
        _ready(Bad()).schedule(0.0, [1, 2], [], 0, _rng())


def test_repr_shows_arguments():
    assert repr(RandomIntervalScheduler()) == "RandomIntervalScheduler(interval=5.0, fraction=0.1)"
    assert repr(ConcurrencyScheduler(concurrency=3)) == "ConcurrencyScheduler(concurrency=3)"
    assert repr(RoundScheduler(clients_per_round=2)) == "RoundScheduler(clients_per_round=2, over_selection=1.0, deadline=None)"


@pytest.mark.parametrize("n, k", [(5, 3), (100, 10), (20_000, 10), (100_000, 7)])
def test_sample_draws_the_same_clients_as_choice_over_the_values(n, k):
    # positions are drawn instead of values (no array of 100,000 ids per event): same clients, same stream
    idle = sorted(np.random.default_rng(n).choice(10 * n, size=n, replace=False).tolist())
    by_value, by_position = np.random.default_rng(1), np.random.default_rng(1)

    expected = sorted(int(c) for c in by_value.choice(idle, size=k, replace=False))
    chosen = Scheduler._sample(idle, k, by_position)

    assert chosen == expected
    assert by_position.random() == by_value.random()  # the stream is left in the same state


def test_schedule_accepts_an_unsorted_idle_list_from_a_caller():
    class Last(Scheduler):
        def _select(self, now, idle, in_flight, version, rng):
            return [idle[-1]]

    assert _ready(Last()).schedule(0.0, [5, 1, 3], [], 0, _rng()) == [3]
