"""Keys that do nothing: a set key the chosen component ignores is named before training, and a sweep over one says so."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lightning_asyncfl.run import build, compose
from lightning_asyncfl.unused_keys import sweep_warnings, unused_key_warnings


def _warnings(*overrides: str, given: tuple[str, ...] = ()) -> list[str]:
    cfg = compose(["progress=false", *overrides])
    aggregator = build(cfg)["aggregator"]
    return unused_key_warnings(cfg, {"server.aggregator": aggregator}, given)


@pytest.mark.parametrize(
    ("overrides", "given", "expected"),
    [
        (["server.aggregator.b=2"], (), ["server.aggregator.b=2 has no effect: staleness=polynomial uses only a; b acts only under staleness=hinge (FedAsync)"]),
        (["server.aggregator.b=2", "server.aggregator.staleness=hinge"], (), []),
        ([], (), []),  # the preset's b equals FedAsync's default: nothing was set
        (["server=fedadam"], (), []),  # a and b are not in the preset at all: nothing was set
        (["server.aggregator.b=4"], ("server.aggregator.b",), ["server.aggregator.b=4 has no effect"]),  # given on the command line
        (["server.aggregator.staleness=constant", "server.aggregator.a=2"], (), ["server.aggregator.a=2 has no effect: staleness=constant uses neither a nor b"]),
        # the deprecated flat robust keys (a reducer holds only the options it uses, so it has no such keys)
        (["server=fedbuff", "+server.aggregator.trim=0.3"], (), ["server.aggregator.trim=0.3 has no effect: trim acts only with rule=trimmed_mean, the rule is mean (FedBuff)"]),
        (["server=fedbuff", "+server.aggregator.trim=0.3", "+server.aggregator.rule=trimmed_mean"], (), []),
        (["server=fedbuff", "+server.aggregator.krum_f=2"], (), ["server.aggregator.krum_f=2 has no effect: krum_f acts only with rule=krum"]),
        (["server=fedbuff", "server.aggregator.reducer={name:trimmed_mean,trim:0.3}"], (), []),
    ],
)  # fmt: skip
def test_a_set_key_that_its_component_ignores_is_named_with_why(overrides, given, expected):
    messages = _warnings(*overrides, given=given)

    assert len(messages) == len(expected)
    for message, start in zip(messages, expected):
        assert message.startswith(start)
        assert "runs that differ only in" in message


def test_the_warning_comes_before_training(make_cfg, caplog):
    with caplog.at_level(logging.WARNING, logger="lightning_asyncfl.run"):
        build(make_cfg("server.aggregator.b=1"))

    assert [r.getMessage() for r in caplog.records if "has no effect" in r.getMessage()] == [
        "server.aggregator.b=1 has no effect: staleness=polynomial uses only a; b acts only under staleness=hinge (FedAsync); "
        "runs that differ only in server.aggregator.b are identical"
    ]  # fmt: skip


def _sweep_cfg(*task: str):
    cfg = compose(["progress=false", *[t for t in task if "," not in t]])
    OmegaConf.set_struct(cfg, False)
    cfg.hydra = {"overrides": {"task": list(task)}}  # as Hydra's multirun config holds the command line
    return cfg


def test_sweep_warnings_name_only_swept_keys_that_do_nothing():
    assert sweep_warnings(_sweep_cfg("server.aggregator.b=1,2")) == [
        "the sweep over server.aggregator.b (1, 2) changes nothing: staleness=polynomial uses only a; b acts only under "
        "staleness=hinge (FedAsync); its 2 values give identical runs"
    ]  # fmt: skip
    assert sweep_warnings(_sweep_cfg("server.aggregator.b=1,2", "server.aggregator.staleness=hinge")) == []
    assert sweep_warnings(_sweep_cfg("server.aggregator.a=0.5,1")) == []
    assert sweep_warnings(_sweep_cfg("server.aggregator.b=1,2", "server=fedasync,fedbuff")) == []  # the component itself changes


@pytest.mark.slow  # 15 s: a CLI sweep; the warning itself is tested on composed configs
def test_a_sweep_over_b_with_polynomial_staleness_warns_and_its_runs_are_identical(tmp_path):
    # Execute: the real command line, two 2-version runs
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "lightning_asyncfl", "-m", "server.aggregator.b=1,2", "server.max_steps=2", "server.eval_every=2",
         "progress=false", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    # Assert: said once at the start of the sweep, and by each run before training; and it is true
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert output.count("the sweep over server.aggregator.b (1, 2) changes nothing") == 1
    assert output.index("changes nothing") < output.index("#0 : server.aggregator.b=1")
    for job, b in ((0, 1), (1, 2)):
        log = (sweep / str(job) / "lightning_asyncfl.log").read_text()
        assert f"server.aggregator.b={b} has no effect" in log
        assert log.index("has no effect") < log.index("Running AsyncFLLoop")
    models = [torch.load(sweep / str(job) / "final_model.pt", weights_only=True) for job in (0, 1)]
    assert all(torch.equal(models[0][k], models[1][k]) for k in models[0])
    assert Path(sweep / "0" / "metrics.csv").read_text().split("\n")[1].split(",")[4:] == Path(sweep / "1" / "metrics.csv").read_text().split("\n")[1].split(",")[4:]
