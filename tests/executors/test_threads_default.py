"""``executor.num_threads: auto`` (the default): the cores available, written into the run's config and summary."""

from __future__ import annotations

import pytest
import torch

from lightning_asyncfl.checkpoint import checkpoints_in, load_checkpoint
from lightning_asyncfl.executors import SequentialExecutor, ThreadExecutor
from lightning_asyncfl.executors import base
from lightning_asyncfl.run import compose, run

#: the default, over the tests' one thread (tests/conftest.py SMALL)
AUTO = "executor.num_threads=auto"


def test_auto_is_the_cores_available_to_this_process():
    # Execute / Assert
    assert base.available_cores() >= 1
    assert SequentialExecutor().num_threads == base.available_cores()
    assert ThreadExecutor(workers=2).num_threads == base.available_cores()
    assert SequentialExecutor(num_threads=None).num_threads is None


def test_a_run_records_the_number_in_its_summary_and_its_checkpoints(make_cfg, monkeypatch):
    # Prepare: a machine with 3 cores
    monkeypatch.setattr(base, "available_cores", lambda: 3)

    # Execute
    summary = run(make_cfg("checkpoint.every_n_steps=6", AUTO))

    # Assert
    assert summary["intra_op_threads"] == 3
    saved = load_checkpoint(checkpoints_in(summary["output_dir"])[0])
    assert saved["config"]["executor"]["num_threads"] == 3


def test_a_resumed_auto_run_keeps_the_checkpoints_number_on_a_machine_with_other_cores(make_cfg, tmp_path, monkeypatch):
    # Prepare: the first part and an uninterrupted reference on "2 cores"
    monkeypatch.setattr(base, "available_cores", lambda: 2)
    reference = run(make_cfg("server.max_steps=18", AUTO, name="reference"))
    run(make_cfg("checkpoint.every_n_steps=6", AUTO))

    # Execute: continued on "3 cores"
    monkeypatch.setattr(base, "available_cores", lambda: 3)
    resumed = run(compose(["progress=false", "server.eval_every=6", f"resume={tmp_path / 'run'}", "server.max_steps=18"]))

    # Assert: the same bytes as the uninterrupted run, and recorded as identical
    assert resumed["intra_op_threads"] == 2 and resumed["continuation"]["identical"]
    assert (tmp_path / "run" / "final_model.pt").read_bytes() == (tmp_path / "reference" / "final_model.pt").read_bytes()
    assert reference["intra_op_threads"] == 2


def test_a_bad_value_names_every_choice():
    with pytest.raises(ValueError, match=r"num_threads must be auto \(the cores available\), null \(torch's default\) or an integer >= 1, got 'many'"):
        SequentialExecutor(num_threads="many")


def test_jobs_run_with_the_resolved_number(make_cfg, monkeypatch):
    # Prepare: record the intra-op threads each job trains with
    seen: list[int] = []
    from lightning_asyncfl import client

    original = client.ClientTrainer.train

    def train(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(client.ClientTrainer, "train", train)
    monkeypatch.setattr(base, "available_cores", lambda: 2)

    # Execute
    run(make_cfg("server.max_steps=3", "server.eval_every=3", AUTO))

    # Assert
    assert seen and set(seen) == {2}
