"""The zygote: worker processes forked from a process forked from the run's before any computation.

conftest.py starts this process's zygote at import, as ``python -m lightning_asyncfl``
does before its first run, so ``executor=processes`` (start_method auto) forks from it in
every test; the executor tests run with it, and with the fork server where they say so.
"""

from __future__ import annotations

import logging
import os

import pytest
import torch

from lightning_asyncfl.client import TrainerSpec
from lightning_asyncfl.errors import ConfigError, InvalidValue, RunFailed
from lightning_asyncfl.executors import ProcessExecutor, zygote
from lightning_asyncfl.run import run
from lightning_asyncfl.state import Job, ModelState
from tests.helpers import children_left, parent_pid, toy_data, toy_model


def _spec() -> tuple[TrainerSpec, ModelState]:
    train, _, indices = toy_data(num_clients=2, per_client=8)
    template = toy_model()
    spec = TrainerSpec(module=template, train_dataset=train, client_indices=indices, settings={"epochs": 1, "batch_size": 4})
    return spec, ModelState.from_module(template)


def _train_one(executor: ProcessExecutor, base: ModelState) -> ModelState:
    job = Job(job_id=0, client_id=1, base_version=0, seed=5, dispatch_time=0.0, arrival_time=1.0)
    executor.submit(job, base)
    return executor.result(job).state


def test_workers_are_forked_by_the_zygote_which_this_process_forked():
    forker = zygote.current()
    assert forker is not None  # conftest started it
    spec, base = _spec()
    executor = ProcessExecutor(workers=2, num_threads=1)
    executor.start(spec)
    try:
        pids = executor.pids
        parents = [parent_pid(pid) for pid in pids]
        trained = _train_one(executor, base)
    finally:
        executor.shutdown()

    assert executor.started_with == "zygote" and "start_method=auto (zygote)" in repr(executor)
    assert len(pids) == 2 and parents == [forker.process.pid] * 2
    assert parent_pid(forker.process.pid) == os.getpid()
    assert all(not os.path.exists(f"/proc/{pid}") for pid in pids)  # stopped and reaped by the zygote
    assert children_left() == []
    # the same bytes as a trainer in this process
    local = spec().train(Job(job_id=0, client_id=1, base_version=0, seed=5, dispatch_time=0.0, arrival_time=1.0), base)
    assert torch.equal(trained.flat, local.state.flat)


def test_start_method_zygote_without_a_zygote_names_the_key_and_what_to_do(make_cfg, monkeypatch):
    monkeypatch.setattr(zygote, "_zygote", None)

    with pytest.raises(InvalidValue, match=r"start_method must be auto, forkserver or spawn here: no zygote runs in this process .*start_zygote\(\)"):
        ProcessExecutor(start_method="zygote")
    with pytest.raises(ConfigError, match=r"executor.start_method must be auto, forkserver or spawn here"):
        run(make_cfg("executor=processes", "executor.start_method=zygote"))


def test_auto_without_a_zygote_starts_workers_from_the_fork_server(monkeypatch):
    monkeypatch.setattr(zygote, "_zygote", None)
    spec, base = _spec()
    executor = ProcessExecutor(workers=1, num_threads=1)
    executor.start(spec)
    try:
        _train_one(executor, base)
    finally:
        executor.shutdown()

    assert executor.started_with == "forkserver"


class _GoneZygote:
    def fork(self, name):
        raise BrokenPipeError("the zygote was killed")


def test_a_zygote_that_cannot_fork_is_logged_and_the_worker_starts_from_the_fork_server(monkeypatch, caplog):
    monkeypatch.setattr(zygote, "current", lambda: _GoneZygote())
    spec, base = _spec()
    executor = ProcessExecutor(workers=1, num_threads=1)

    with caplog.at_level(logging.WARNING, logger="lightning_asyncfl.executors.processes"):
        executor.start(spec)
    try:
        trained = _train_one(executor, base)
    finally:
        executor.shutdown()

    assert executor.started_with == "forkserver"
    assert "the zygote could not fork worker process 0 (the zygote was killed); starting it from the fork server" in caplog.text
    assert torch.isfinite(trained.flat).all()
    strict = ProcessExecutor(workers=1, num_threads=1, start_method="zygote")  # asked for by name: no fallback
    with pytest.raises(RunFailed, match=r"the zygote could not fork worker process 0: the zygote was killed"):
        strict.start(spec)
