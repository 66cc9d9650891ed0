"""One setup(context) for every plug-in, called once by one owner; every plug-in's problem in one error."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from lightning_asyncfl import seeding
from lightning_asyncfl.aggregators import CA2FL, FedAT, FedAsync, Scaffold
from lightning_asyncfl.attacks import ScaleAttack
from lightning_asyncfl.availability import CheckIn
from lightning_asyncfl.context import SetupContext
from lightning_asyncfl.delays import LogNormalDelay
from lightning_asyncfl.errors import ConfigError
from lightning_asyncfl.plugins import setup_plugins
from lightning_asyncfl.run import build
from lightning_asyncfl.schedulers import ConcurrencyScheduler


class CountingScheduler(ConcurrencyScheduler):
    """Counts its setups."""

    calls = 0

    def setup(self, context):
        type(self).calls += 1
        super().setup(context)


class OldStyleScheduler(ConcurrencyScheduler):
    """A scheduler written before setup(context): it overrides setup(num_clients)."""

    def setup(self, num_clients):
        self.seen = num_clients
        super().setup(num_clients)


def test_bad_attack_and_other_bad_key_are_reported_in_one_config_error(make_cfg):
    # Prepare: 1% of 4 clients rounds to no attacker (a problem only setup can see), and a bad stop rule
    cfg = make_cfg("attack=scale", "attack.fraction=0.01", "server.max_steps=0")

    # Execute
    with pytest.raises(ConfigError) as info:
        build(cfg)

    # Assert
    problems = info.value.problems
    assert any(p.startswith("attack.fraction must be 0 or at least") and "got 0.01" in p for p in problems), problems
    assert any(p.startswith("server.max_steps must be") for p in problems), problems


def test_bad_availability_and_bad_scheduler_are_reported_in_one_config_error(make_cfg):
    # Prepare
    cfg = make_cfg("availability=check_in", "availability.count=0", "server.scheduler.concurrency=1000")

    # Execute
    with pytest.raises(ConfigError) as info:
        build(cfg)

    # Assert
    problems = info.value.problems
    assert any(p.startswith("availability.count") for p in problems), problems
    assert any(p.startswith("server.scheduler.concurrency must be <= the number of clients") for p in problems), problems


def test_no_conf_file_interpolates_data_num_clients():
    # Prepare
    from pathlib import Path

    conf = Path(__file__).resolve().parents[1] / "conf"

    # Execute
    hits = [str(p) for p in conf.rglob("*.yaml") if "data.num_clients" in p.read_text()]

    # Assert
    assert hits == []


@pytest.mark.parametrize("server", ["ca2fl", "scaffold"])
def test_ca2fl_and_scaffold_learn_the_number_of_clients_from_the_context(server, make_cfg):
    # Prepare
    cfg = make_cfg(f"server={server}", "data.num_clients=12")

    # Execute
    parts = build(cfg)

    # Assert
    assert parts["aggregator"].num_clients == 12
    assert parts["context"].num_clients == 12


def test_explicit_num_clients_must_match_the_run():
    # Prepare
    context = SetupContext.of([5] * 4, seed=0)

    # Execute / Assert
    CA2FL(num_clients=4).setup(context)
    with pytest.raises(ValueError, match=r"num_clients must be null or the run's number of clients \(4\), got 5"):
        Scaffold(num_clients=5).setup(context)


def test_each_plugin_is_set_up_once_even_under_two_keys():
    # Prepare: FedAT is the aggregator and the scheduler
    fedat = FedAT(num_tiers=2, clients_per_round=1)
    context = SetupContext.of([3] * 4, seed=0)
    CountingScheduler.calls = 0
    counting = CountingScheduler(concurrency=2)

    # Execute
    done = setup_plugins(context, {"server.aggregator": fedat, "server.scheduler": fedat, "delay": None, "attack": counting})

    # Assert
    assert done == {"server.aggregator": True, "server.scheduler": True, "attack": True}
    assert fedat.num_clients == 4
    assert CountingScheduler.calls == 1


def test_old_style_setup_still_works_with_a_deprecation_warning():
    # Prepare
    scheduler = OldStyleScheduler(concurrency=2)
    context = SetupContext.of([3] * 5, seed=0)

    # Execute
    with pytest.warns(DeprecationWarning, match=r"OldStyleScheduler.setup\(num_clients\) is the old interface"):
        setup_plugins(context, {"server.scheduler": scheduler})

    # Assert
    assert scheduler.seen == 5 and scheduler.num_clients == 5


def test_context_streams_continue_across_setup_and_the_loop():
    # Prepare: the delay draws its per-client factors at setup; the loop then draws job durations from the same stream
    context = SetupContext.of([10] * 3, seed=4)
    delay = LogNormalDelay(client_sigma=1.0)
    oracle = seeding.stream(4, seeding.DELAY)

    # Execute
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        setup_plugins(context, {"delay": delay, "attack": ScaleAttack(fraction=0.5), "availability": CheckIn(interval=1.0, count=1)})
    after = context.stream(seeding.DELAY).normal()

    # Assert
    np.testing.assert_array_equal(delay._factors, np.exp(oracle.normal(0.0, 1.0, size=3)))
    assert after == oracle.normal()
    assert context.stream(seeding.DELAY) is context.stream(seeding.DELAY)


def test_setup_problems_of_a_loop_built_in_python_are_one_error():
    # Prepare
    context = SetupContext.of([1] * 2, seed=0)

    # Execute
    with pytest.raises(ConfigError) as info:
        setup_plugins(context, {"server.aggregator": FedAsync(), "server.scheduler": ConcurrencyScheduler(concurrency=3), "attack": ScaleAttack(fraction=0.1)})

    # Assert
    assert len(info.value.problems) == 2
    assert info.value.problems[0].startswith("attack.fraction must be")
    assert info.value.problems[1].startswith("server.scheduler.concurrency must be <=")
