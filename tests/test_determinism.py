"""The same config gives the same bytes: final weights and updates.csv; another seed does not."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from lightning_asyncfl.run import run


def _weights(cfg) -> dict[str, torch.Tensor]:
    return torch.load(Path(cfg.output_dir) / "final_model.pt", weights_only=True)


def _metrics_without_wall_time(cfg) -> list[dict[str, str]]:
    with (Path(cfg.output_dir) / "metrics.csv").open(newline="") as handle:
        return [{k: v for k, v in row.items() if k != "wall_time"} for row in csv.DictReader(handle)]


@pytest.mark.parametrize(
    "overrides",
    [[], ["server=fedbuff"], ["model.dropout=0.5", "delay=exponential", "partition=shards"]],
    ids=["fedasync", "fedbuff", "dropout-exponential-shards"],
)
def test_same_config_twice_gives_identical_weights_and_updates(overrides, make_cfg):
    # Prepare
    first, second = make_cfg(*overrides, name="first"), make_cfg(*overrides, name="second")

    # Execute
    summary_1, summary_2 = run(first), run(second)

    # Assert
    a, b = _weights(first), _weights(second)
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    updates_1 = (Path(first.output_dir) / "updates.csv").read_bytes()
    assert updates_1 == (Path(second.output_dir) / "updates.csv").read_bytes()
    assert updates_1.count(b"\n") == summary_1["client_updates"] + 1
    assert _metrics_without_wall_time(first) == _metrics_without_wall_time(second)
    ignore = {"wall_time", "executor_start_time", "output_dir"}  # the two wall-clock measurements
    assert {k: v for k, v in summary_1.items() if k not in ignore} == {k: v for k, v in summary_2.items() if k not in ignore}


def test_another_seed_gives_other_weights(make_cfg):
    # Prepare
    seed_0, seed_1 = make_cfg("seed=0", name="seed0"), make_cfg("seed=1", name="seed1")

    # Execute
    run(seed_0)
    run(seed_1)

    # Assert
    a, b = _weights(seed_0), _weights(seed_1)
    assert list(a) == list(b)
    assert all(not torch.equal(a[k], b[k]) for k in a)
    assert (Path(seed_0.output_dir) / "updates.csv").read_bytes() != (Path(seed_1.output_dir) / "updates.csv").read_bytes()
