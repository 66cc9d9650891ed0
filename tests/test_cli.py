"""The command line: a run from any directory, a multirun sweep, and a user's own aggregator."""

from __future__ import annotations

import pytest

import json
import logging
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from omegaconf import OmegaConf

from lightning_asyncfl.run import build, run

RUN_FILES = ["partition.csv", "partition.png", "metrics.csv", "updates.csv", "summary.json", "final_model.pt", "accuracy.png"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lightning_asyncfl", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_run_from_another_directory_writes_into_hydras_run_dir(tmp_path):
    # Execute: tmp_path is not the repository, so the configs must come from the package
    result = _cli("server.max_steps=6", "server.eval_every=3", "progress=false", cwd=tmp_path)

    # Assert
    assert result.returncode == 0, result.stderr[-3000:]
    run_dirs = [p for p in tmp_path.glob("outputs/*/*") if p.is_dir()]
    assert len(run_dirs) == 1
    run_dir = run_dirs[0]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}", run_dir.relative_to(tmp_path / "outputs").as_posix())
    for name in [*RUN_FILES, ".hydra/config.yaml"]:
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 6
    assert summary["output_dir"] == str(run_dir.resolve())
    output = result.stdout + result.stderr
    assert str(run_dir.resolve()) in output
    assert f"test accuracy {summary['final_accuracy']:.4f}" in output
    composed = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert composed.server.max_steps == 6 and composed.server.eval_every == 3


def test_cli_multirun_sweeps_the_cartesian_product_into_one_directory_per_job(tmp_path):
    # Execute
    result = _cli(
        "-m", "server.aggregator.alpha=0.3,0.9", "server.aggregator.a=0.5,1",
        "server.max_steps=4", "server.eval_every=2", "progress=false", cwd=tmp_path,
    )  # fmt: skip

    # Assert
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted((p for p in tmp_path.glob("multirun/*/*/*") if p.is_dir()), key=lambda p: int(p.name))
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    pairs, rest = [], []
    for job in jobs:
        summary = json.loads((job / "summary.json").read_text())
        assert summary["steps"] == 4
        assert summary["output_dir"] == str(job.resolve())
        composed = OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "config.yaml"))
        aggregator = composed["server"]["aggregator"]
        pairs.append((aggregator.pop("alpha"), aggregator.pop("a")))
        rest.append(composed)
    assert sorted(pairs) == [(0.3, 0.5), (0.3, 1), (0.9, 0.5), (0.9, 1)]
    assert all(other == rest[0] for other in rest[1:]), "the job configs differ in more than the swept values"
    weights = [torch.load(job / "final_model.pt", weights_only=True) for job in jobs]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


MYMODULE = '''
from lightning_asyncfl.aggregators import AsyncAggregator
from lightning_asyncfl.aggregators.fedasync import fedasync_mix


class Mine(AsyncAggregator):
    """FedAsync with a constant mixing weight; counts its aggregate calls."""

    created = []

    def __init__(self, *, alpha: float = 0.6, staleness: str = "constant", a: float = 0.0, b: float = 0.0) -> None:
        super().__init__(buffer_size=1)
        self.alpha = float(alpha)
        self.calls = 0
        Mine.created.append(self)

    def aggregate(self, global_state, updates, version):
        self.calls += 1
        flat = global_state.flat
        for update in updates:
            flat = fedasync_mix(flat, update.state.flat, self.alpha)
        return global_state.with_flat(flat)
'''


def test_users_own_aggregator_class_runs_from_the_config(tmp_path, make_cfg, monkeypatch, caplog):
    # Prepare: Mine mixes like FedAsync with s = 1, so it must match FedAsync(staleness=constant) bit for bit
    (tmp_path / "mymodule.py").write_text(textwrap.dedent(MYMODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mymodule", raising=False)
    cfg = make_cfg("server.aggregator._target_=mymodule.Mine", name="mine")
    reference = make_cfg("server.aggregator.staleness=constant", name="fedasync")
    import mymodule

    monkeypatch.setitem(sys.modules, "mymodule", mymodule)  # removed again after the test
    # Execute
    built = build(cfg)["aggregator"]
    with caplog.at_level(logging.INFO, logger="lightning_asyncfl"):
        summary = run(cfg)
    run(reference)

    # Assert
    assert type(built) is mymodule.Mine
    used = mymodule.Mine.created[-1]
    assert used is not built and used.calls == summary["steps"] == cfg.server.max_steps
    assert "Instantiated aggregator <mymodule.Mine>" in caplog.text
    mine = torch.load(Path(cfg.output_dir) / "final_model.pt", weights_only=True)
    fedasync = torch.load(Path(reference.output_dir) / "final_model.pt", weights_only=True)
    assert mine.keys() == fedasync.keys()
    assert all(torch.equal(mine[k], fedasync[k]) for k in mine)


@pytest.mark.slow  # 14 s: a second multirun; test_cli_multirun_sweeps_the_cartesian_product covers the sweep
def test_cli_multirun_with_a_fixed_output_dir_gives_each_job_its_own_subdirectory(tmp_path):
    result = _cli("-m", f"output_dir={tmp_path / 'sweep'}", "seed=0,1", "server.max_steps=3", "server.eval_every=3", "progress=false", cwd=tmp_path)

    assert result.returncode == 0, result.stderr[-3000:]
    seeds = [json.loads((tmp_path / "sweep" / job / "summary.json").read_text())["seed"] for job in ("0", "1")]
    assert seeds == [0, 1]
