"""Compression, DP and SecAgg in whole runs of the real config: bytes, identity, accounting, resume."""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections import Counter, defaultdict

import pytest
import torch
from opacus.accountants import RDPAccountant

from lightning_asyncfl.checkpoint import list_checkpoints
from lightning_asyncfl.errors import ConfigError
from lightning_asyncfl.run import compose, run
from tests.conftest import SMALL

EVERY = ["checkpoint.every_n_steps=4", "checkpoint.keep_last=100"]


def _rows(path):
    with open(path / "updates.csv", newline="") as f:
        return list(csv.DictReader(f))


def _same_run(a, b):
    assert (a / "final_model.pt").read_bytes() == (b / "final_model.pt").read_bytes()
    assert (a / "updates.csv").read_bytes() == (b / "updates.csv").read_bytes()
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    ignore = {"wall_time", "executor_start_time", "output_dir", "last_checkpoint"}
    assert {k: v for k, v in sa.items() if k not in ignore} == {k: v for k, v in sb.items() if k not in ignore}


def test_topk_bytes_on_the_wire_are_the_closed_form(make_cfg, tmp_path):
    # Execute
    summary = run(make_cfg("compression=topk", "compression.density=0.1"))

    # Assert: k = ceil(0.1 d) values of 4 bytes and 4 index bytes per upload (the MLP has no integer buffers)
    d = summary["model_bytes"] // 4
    per_upload = math.ceil(0.1 * d) * (4 + 4)
    rows = _rows(tmp_path / "run")
    assert {int(r["upload_bytes"]) for r in rows} == {per_upload}
    assert summary["bytes_up"] == per_upload * summary["client_updates"]
    assert summary["bytes_up"] < 0.25 * summary["model_bytes"] * summary["client_updates"]


def test_dp_with_noise_zero_and_no_clip_is_the_plain_run_bit_for_bit(make_cfg, tmp_path):
    run(make_cfg("server=fedbuff", name="plain"))
    summary = run(make_cfg("server=fedbuff", "privacy=central", "privacy.dp.noise_multiplier=0", "privacy.dp.clip_norm=null", name="dp"))
    assert (tmp_path / "plain" / "final_model.pt").read_bytes() == (tmp_path / "dp" / "final_model.pt").read_bytes()
    assert summary["privacy"]["dp"]["epsilon"] is None  # no noise: no finite ε


def test_reported_epsilon_is_opacus_on_the_buffers_of_updates_csv(make_cfg, tmp_path):
    # Execute: central DP, FedBuff K = 5 with constant staleness (all coefficients equal)
    z = 1.1
    summary = run(make_cfg("server=fedbuff", "server.aggregator.staleness=constant", "privacy=central", f"privacy.dp.noise_multiplier={z}"))

    # Assert: each aggregated buffer (accepted rows by the version they arrived at) is one release of
    # each client in it at multiplier z / (its updates in the buffer); ε = the largest over clients
    buffers = defaultdict(Counter)
    for r in _rows(tmp_path / "run"):
        if r["status"] == "accepted" and int(r["version"]) < summary["steps"]:
            buffers[int(r["version"])][int(r["client_id"])] += 1
    assert len(buffers) == summary["steps"]
    histories = defaultdict(list)
    for counts in buffers.values():
        for client, m in counts.items():
            histories[client].append(z / m)
    expected = 0.0
    for sigmas in histories.values():
        accountant = RDPAccountant()
        for sigma in sigmas:
            accountant.step(noise_multiplier=sigma, sample_rate=1.0)
        expected = max(expected, accountant.get_epsilon(delta=1e-5))
    assert summary["privacy"]["dp"]["epsilon"] == pytest.approx(expected, rel=1e-12)
    assert summary["privacy"]["dp"]["max_received_norm"] <= 1.0
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        eps = [float(r["epsilon"]) for r in csv.DictReader(f)]
    assert eps[0] == 0.0 and eps[-1] == summary["privacy"]["dp"]["epsilon"] and eps == sorted(eps)
    by_version = summary["privacy"]["dp"]["epsilon_by_version"]
    assert [v for v, _ in by_version] == list(range(1, summary["steps"] + 1)) and by_version[-1][1] == eps[-1]


def test_a_target_epsilon_stops_the_run_within_budget(make_cfg):
    summary = run(make_cfg("server=fedbuff", "privacy=central", "privacy.dp.noise_multiplier=1.0", "privacy.dp.target_epsilon=6"))
    assert summary["stop_reason"] == "target_epsilon" and summary["status"] == "completed"
    assert 0 < summary["privacy"]["dp"]["epsilon"] <= 6
    assert summary["rejected"] == {"privacy_budget": 5} and summary["accounting"]["balanced"]


def test_bad_privacy_settings_are_reported_together_before_training(make_cfg, tmp_path):
    with pytest.raises(ConfigError) as error:
        run(make_cfg("compression=topk", "compression.density=0", "privacy=central_secagg", "privacy.dp.noise_multiplier=-1"))
    text = str(error.value)
    assert "compression.density must be in (0, 1], got 0" in text
    assert "privacy.dp.noise_multiplier must be a finite number >= 0, got -1" in text
    with pytest.raises(ConfigError, match="privacy.secagg must be used with a FedBuff aggregator"):
        run(make_cfg("privacy=secagg", name="fedasync"))
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_secagg_run_with_dropouts_completes_and_counts_the_exchange(make_cfg, tmp_path):
    summary = run(make_cfg("server=fedbuff", "privacy=secagg", "availability=dropout", "availability.p=0.3"))
    assert summary["status"] == "completed" and summary["accounting"]["balanced"] and summary["dropped"] > 0
    d = summary["model_bytes"] // 4
    assert summary["bytes_up"] == summary["client_updates"] * (6 * d + summary["privacy"]["secagg"]["exchange_bytes_per_upload"])


@pytest.mark.parametrize(
    "overrides",
    [
        ["server=fedbuff", "compression=topk"],  # error-feedback residuals held across checkpoints
        ["server=fedbuff", "privacy=central", "compression=qsgd", "compression.error_feedback=true"],  # accountant, noise, coin flips
        pytest.param(["client_algorithm=dpsgd"], marks=pytest.mark.slow),  # 25 s; per-sample clipping and noise, each client's step count
    ],
    ids=["topk", "dp-qsgd", "dpsgd"],
)
def test_resuming_a_private_or_compressed_run_gives_the_uninterrupted_bytes(make_cfg, tmp_path, overrides):
    # Prepare: the uninterrupted run, a checkpoint every 4 versions
    whole = tmp_path / "run"
    run(make_cfg(*EVERY, *overrides))
    checkpoints = [p for _, p in list_checkpoints(whole / "checkpoints")][:-1]
    assert len(checkpoints) >= 2
    state = torch.load(checkpoints[0], weights_only=True)
    channel = next(v for k, v in state["callbacks"].items() if k.endswith("UploadChannel"))
    assert channel["residuals"] or (channel["accountant"] or {}).get("histories") or any("dpsgd_steps" in c for c in state["client_states"].values())

    for checkpoint in checkpoints:
        # Execute
        copy = tmp_path / f"resumed-{checkpoint.stem}"
        shutil.copytree(whole, copy)
        summary = run(compose([*SMALL, *EVERY, *overrides, f"resume={copy / 'checkpoints' / checkpoint.name}"]))

        # Assert
        assert summary["status"] == "completed"
        _same_run(whole, copy)


def test_a_private_compressed_run_is_the_same_on_threads(make_cfg, tmp_path):
    overrides = ["server=fedbuff", "privacy=local", "privacy.dp.noise_multiplier=0.3", "compression=topk"]
    run(make_cfg(*overrides, name="sequential"))
    run(make_cfg(*overrides, "executor=threads", "executor.workers=2", name="threads"))
    assert (tmp_path / "sequential" / "final_model.pt").read_bytes() == (tmp_path / "threads" / "final_model.pt").read_bytes()
