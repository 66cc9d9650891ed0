"""Every experiment preset (conf/experiment/*.yaml) states its command, applies its values and runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from lightning_asyncfl.run import _leaves, compose, run  # dotted leaves of a plain config, as resume compares them
from tests.conftest import SMALL

CONF = Path(__file__).parents[1] / "conf"
PRESETS = sorted(path.stem for path in (CONF / "experiment").glob("*.yaml"))
#: the keys SMALL sets, which the shrunk run does not take from the preset
SHRUNK = {override.split("=", 1)[0] for override in SMALL}


def test_the_paper_presets_are_there():
    assert {"fedasync_paper_poly", "fedasync_paper_hinge", "fedbuff_paper"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_starts_with_its_command_and_runs_shrunk_with_its_values(name, tmp_path):
    # Prepare
    text = (CONF / "experiment" / f"{name}.yaml").read_text()
    lines = text.splitlines()
    preset = yaml.safe_load(text)
    servers = [entry["override /server"] for entry in preset.get("defaults", []) if "override /server" in entry]
    cfg = compose([f"experiment={name}", *SMALL, f"output_dir={tmp_path}"])

    # Execute
    summary = run(cfg)

    # Assert: the command, then every value of the preset in the composed config, then a run
    assert lines[0] == "# @package _global_"
    assert lines[1].startswith(f"# python -m lightning_asyncfl experiment={name}")
    composed = _leaves(OmegaConf.to_container(cfg, resolve=True))
    given = {k: v for k, v in _leaves({k: v for k, v in preset.items() if k != "defaults"}).items() if k not in SHRUNK}
    assert {k: composed[k] for k in given} == given
    if servers:
        [server] = servers
        expected = yaml.safe_load((CONF / "server" / f"{server}.yaml").read_text())["aggregator"]["_target_"]
        assert cfg.server.aggregator._target_ == expected
    assert summary["steps"] == 12
    assert summary["stop_reason"] == "max_steps"
    assert summary["accounting"]["balanced"]
