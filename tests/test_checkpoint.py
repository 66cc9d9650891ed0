"""Checkpoint and resume: a run resumed from any of its checkpoints ends with the same bytes.

Also: atomic writes and ``keep_last``, ``weights_only`` loading, ``resume=auto``, what a
resumed run may change, SIGKILL and Ctrl-C at a random point, and a client error that
stops the run.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightning_asyncfl.checkpoint import Checkpointer, checksum, find_checkpoint, list_checkpoints, load_checkpoint
from lightning_asyncfl.errors import ConfigError, InvalidValue
from lightning_asyncfl.faults import InjectedFault
from lightning_asyncfl.run import compose, run
from tests.conftest import SMALL

EVERY = ["checkpoint.every_n_steps=4", "checkpoint.keep_last=100"]


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as handle:
        return [{k: v for k, v in row.items() if k != "wall_time"} for row in csv.DictReader(handle)]


def _same_run(a: Path, b: Path) -> None:
    """The two run directories hold the same weights, the same updates.csv and the same metrics."""
    assert (a / "final_model.pt").read_bytes() == (b / "final_model.pt").read_bytes()
    assert (a / "updates.csv").read_bytes() == (b / "updates.csv").read_bytes()
    assert _metrics(a) == _metrics(b)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    ignore = {"wall_time", "executor_start_time", "output_dir", "last_checkpoint"}
    assert {k: v for k, v in sa.items() if k not in ignore} == {k: v for k, v in sb.items() if k not in ignore}


# -- the checkpointer ---------------------------------------------------------------


def test_checkpoints_are_numbered_kept_to_keep_last_and_load_with_weights_only(tmp_path):
    # Prepare
    saver = Checkpointer(tmp_path / "ckpt", every_n_steps=5, keep_last=2, meta={"config": {"seed": 1}})

    # Execute
    for version in (5, 10, 15):
        saver.save({"version": version, "w": torch.full((3,), float(version))}, version)

    # Assert: the two newest remain, no temporary file is left, and they load with weights_only
    names = [p.name for _, p in list_checkpoints(tmp_path / "ckpt")]
    assert names == ["checkpoint-00001-v10.ckpt", "checkpoint-00002-v15.ckpt"]
    assert sorted(os.listdir(tmp_path / "ckpt")) == names
    state = load_checkpoint(find_checkpoint(tmp_path / "ckpt"))
    assert state["version"] == 15 and state["config"] == {"seed": 1} and torch.equal(state["w"], torch.full((3,), 15.0))
    assert find_checkpoint(tmp_path) is None  # neither tmp_path/checkpoints nor tmp_path holds one
    assert saver.due(20, 15) and not saver.due(20, 20) and not saver.due(21, 15)


def test_a_checkpoint_holding_more_than_tensors_and_plain_values_is_refused(tmp_path):
    # Prepare: an arbitrary object, which weights_only loading must not unpickle
    path = tmp_path / "bad.ckpt"
    torch.save({"format": 1, "payload": Checkpointer(tmp_path)}, path)

    # Execute / Assert
    with pytest.raises(InvalidValue, match="resume must be a checkpoint written by lightning_asyncfl"):
        load_checkpoint(path)


def test_bad_checkpoint_settings_are_reported_together(make_cfg):
    with pytest.raises(ConfigError) as error:
        run(make_cfg("checkpoint.every_n_steps=0", "checkpoint.keep_last=0"))
    text = str(error.value)
    assert "checkpoint.every_n_steps must be null or an integer >= 1, got 0" in text
    assert "checkpoint.keep_last must be an integer >= 1, got 0" in text


# -- resume gives the same bytes ------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        ["server=fedbuff"],  # a buffer that holds updates across checkpoints
        ["server=fedbuff_adam"],  # server optimizer state
        ["server=fadas"],  # AMSGrad state and the step count of the bias corrections
        ["server=scaffold"],  # per-client state c_i and the server control variate
        ["server=random_interval"],  # scheduler state (next tick)
        ["server=fedat"],  # aggregator and scheduler in one object
        ["server=ca2fl", "availability=dropout", "availability.p=0.3", "availability.offline=0.5"],  # dropouts in flight
        ["faults=random", "faults.error_rate=0.3", "server.on_client_error=retry", "attack=scale"],  # retries in flight
        ["server=fedavg", "server.scheduler.clients_per_round=4", "server.scheduler.over_selection=1.5",
         "server.scheduler.deadline=0.012"],  # rounds that close early, stragglers in flight  # fmt: skip
    ],
    ids=["fedbuff", "fedbuff_adam", "fadas", "scaffold", "random_interval", "fedat", "ca2fl-dropout", "faults-retry-attack", "fedavg-deadline"],
)
def test_resuming_from_every_checkpoint_gives_the_uninterrupted_bytes(make_cfg, tmp_path, overrides):
    # Prepare: the uninterrupted run, with a checkpoint every 4 versions
    whole = tmp_path / "run"
    run(make_cfg(*EVERY, *overrides))
    checkpoints = [p for _, p in list_checkpoints(whole / "checkpoints")][:-1]  # the last is the end
    assert len(checkpoints) >= 2

    for checkpoint in checkpoints:
        # Execute: a copy of the run directory as it was, resumed from this checkpoint
        copy = tmp_path / f"resumed-{checkpoint.stem}"
        shutil.copytree(whole, copy)
        summary = run(compose([*SMALL, *EVERY, *overrides, f"resume={copy / 'checkpoints' / checkpoint.name}"]))

        # Assert
        assert summary["status"] == "completed" and summary["accounting"]["balanced"]
        _same_run(whole, copy)


def test_a_finished_run_resumed_with_more_steps_and_another_executor_equals_the_longer_run(make_cfg, tmp_path):
    # Prepare
    longer = run(make_cfg("server.max_steps=20", name="longer"))
    run(make_cfg(name="short"))  # 12 steps

    # Execute
    summary = run(compose(["progress=false", "server.eval_every=6", f"resume={tmp_path / 'short'}", "server.max_steps=20", "executor=threads", "executor.workers=2"]))

    # Assert
    assert summary["steps"] == 20 == longer["steps"]
    assert (tmp_path / "short" / "final_model.pt").read_bytes() == (tmp_path / "longer" / "final_model.pt").read_bytes()


def test_resume_auto_starts_a_new_run_then_continues_it(make_cfg, tmp_path):
    # Execute: nothing to resume yet, so a new run
    first = run(make_cfg("resume=auto"))
    # then the same command with more steps continues from the run's last checkpoint
    second = run(make_cfg("resume=auto", "server.max_steps=18"))

    # Assert
    run(make_cfg("server.max_steps=18", name="reference"))
    assert first["steps"] == 12 and second["steps"] == 18
    assert (tmp_path / "run" / "final_model.pt").read_bytes() == (tmp_path / "reference" / "final_model.pt").read_bytes()


def test_a_resumed_run_refuses_changes_to_what_it_computes(make_cfg, tmp_path):
    # Prepare
    run(make_cfg())

    # Execute / Assert: every changed key is named, with both values
    with pytest.raises(ConfigError) as error:
        run(compose(["progress=false", f"resume={tmp_path / 'run'}", "server.aggregator.alpha=0.3", "client.batch_size=7"]))
    text = str(error.value)
    assert "server.aggregator.alpha: the checkpoint's run has 0.6, this command gives 0.3" in text
    assert "client.batch_size: the checkpoint's run has 16, this command gives 7" in text


def test_resume_from_a_path_without_checkpoints_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="resume: no checkpoint at"):
        run(compose(["progress=false", f"resume={tmp_path}"]))


def test_a_client_error_that_stops_the_run_leaves_a_checkpoint_of_the_state_just_before(make_cfg, tmp_path):
    # Execute
    with pytest.raises(InjectedFault):
        run(make_cfg("faults=random", "faults.error_rate=0.2", "faults.nan_rate=0", "server.on_client_error=raise"))

    # Assert: summary.json says failed, and the checkpoint holds the failing job still in flight
    out = tmp_path / "run"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["failed"] == 0
    state = load_checkpoint(find_checkpoint(out))
    assert state["version"] == summary["steps"]
    first_arrival = min(state["arrivals"])[1]
    assert first_arrival in {job["job_id"] for job in state["jobs"]}
    assert not (out / "final_model.pt").exists()


# -- a real process killed at a random point -----------------------------------------------

LONG = ["server.max_steps=100000", "server.eval_every=5", "progress=false", "checkpoint.every_n_steps=5", "server=fedbuff", "server.aggregator.buffer_size=3"]


def _start(out: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lightning_asyncfl", *LONG, f"output_dir={out}"],
        cwd=cwd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _wait_for_checkpoints(process: subprocess.Popen, out: Path, count: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and len(list_checkpoints(out / "checkpoints")) < count:
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()[0][-3000:]


def _resume_and_compare(out: Path, tmp_path: Path) -> None:
    """Resume ``out`` to 10 versions past its last checkpoint; compare with a run that never stopped."""
    last = find_checkpoint(out)
    target = load_checkpoint(last)["version"] + 10
    overrides = [o for o in LONG if not o.startswith("server.max_steps")]
    result = subprocess.run(
        [sys.executable, "-m", "lightning_asyncfl", *overrides, f"resume={out}", f"server.max_steps={target}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run(compose([*overrides, f"server.max_steps={target}", f"output_dir={tmp_path / 'reference'}"]))
    _same_run(tmp_path / "reference", out)


def test_sigkill_at_a_random_point_then_resume_gives_the_same_bytes(tmp_path):
    # Prepare: a long run, killed with SIGKILL at a random moment after its second checkpoint
    out = tmp_path / "run"
    process = _start(out, tmp_path)
    _wait_for_checkpoints(process, out, 2)
    time.sleep(random.Random().uniform(0.0, 1.0))

    # Execute
    process.kill()
    process.communicate(timeout=60)

    # Assert: no trace of an end, then the resumed run ends as one that never stopped
    assert process.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists() and not (out / "final_model.pt").exists()
    _resume_and_compare(out, tmp_path)


def test_ctrl_c_writes_a_checkpoint_and_an_interrupted_summary_then_resume_gives_the_same_bytes(tmp_path):
    # Prepare
    out = tmp_path / "run"
    process = _start(out, tmp_path)
    _wait_for_checkpoints(process, out, 1)
    time.sleep(random.Random().uniform(0.0, 1.0))

    # Execute
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)

    # Assert: exit 130, a summary that says interrupted, a checkpoint of that very moment, the metrics so far
    assert process.returncode == 130, output[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["accounting"]["balanced"]
    state = load_checkpoint(out / summary["last_checkpoint"])
    assert state["version"] == summary["steps"] and state["now"] == summary["virtual_time"]
    assert len(_metrics(out)) == len(state["history"])
    _resume_and_compare(out, tmp_path)


# -- a checkpoint is data: what a resumed run builds, and what it refuses -------------------------


def _crafted(source: Path, destination: Path, edit) -> Path:
    """A copy of checkpoint ``source`` with ``edit(state)`` applied and its checksum made to match: what someone could send you."""
    state = torch.load(source, map_location="cpu", weights_only=True)
    state.pop("checksum")
    edit(state)
    torch.save({**state, "checksum": checksum(state)}, destination)
    return destination


def _writes_file(path: Path) -> dict:
    """A config node that, if instantiated, creates ``path``."""
    return {"_target_": "pathlib.Path.write_text", "self": {"_target_": "pathlib.Path", "_args_": [str(path)]}, "data": "ran"}


def test_resuming_a_crafted_checkpoint_never_instantiates_its_stored_config(make_cfg, tmp_path):
    # Prepare: a real run, and copies of it whose checkpoint's stored config would create a file
    run(make_cfg())
    marker = tmp_path / "pwned"
    edits = {
        "aggregator": lambda s: s["config"]["server"].update(aggregator=_writes_file(marker)),
        "callback": lambda s: s["config"].update(callbacks={"evil": _writes_file(marker)}),
        "executor": lambda s: s["config"].update(executor=_writes_file(marker)),
    }
    crafted = {}
    for name, edit in edits.items():
        shutil.copytree(tmp_path / "run", tmp_path / name)
        source = find_checkpoint(tmp_path / name)
        crafted[name] = _crafted(source, source, edit)
    command = ["progress=false", "server.max_steps=12", "server.eval_every=6"]

    # Execute / Assert: a stored object that differs from this command's is refused, naming both
    with pytest.raises(ConfigError) as error:
        run(compose([*command, f"resume={crafted['aggregator']}"]))
    assert "server.aggregator._target_: the checkpoint's run has 'pathlib.Path.write_text', this command gives 'lightning_asyncfl.aggregators.FedAsync'" in str(error.value)
    with pytest.raises(ConfigError, match="executor._target_: the checkpoint's run has 'pathlib.Path.write_text'"):
        run(compose([*command, f"resume={crafted['executor']}"]))
    assert not marker.exists()
    # what observes the run comes from this command only: the stored callbacks are ignored
    summary = run(compose([*command, f"resume={crafted['callback']}"]))
    assert summary["status"] == "completed" and summary["steps"] == 12
    assert not marker.exists()


def test_a_resumed_run_names_the_overrides_it_needs_when_the_command_composes_another_config(make_cfg, tmp_path):
    # Prepare
    run(make_cfg("server=fedbuff", "server.aggregator.buffer_size=3"))

    # Execute / Assert: resume=RUN alone composes the default config, which is not the run's
    with pytest.raises(ConfigError) as error:
        run(compose(["progress=false", f"resume={tmp_path / 'run'}"]))
    text = str(error.value)
    assert "server.aggregator._target_: the checkpoint's run has 'lightning_asyncfl.aggregators.FedBuff'" in text
    assert "server.aggregator.buffer_size" in text

    # the same command with the run's overrides continues it
    summary = run(compose(["progress=false", f"resume={tmp_path / 'run'}", "server=fedbuff", "server.aggregator.buffer_size=3", "server.eval_every=6", "server.max_steps=14"]))
    assert summary["steps"] == 14 and summary["status"] == "completed"


# -- checkpoint.dir: a run whose checkpoints live elsewhere resumes like any other ----------------


def test_a_run_with_checkpoint_dir_resumes_with_auto_with_its_directory_and_with_a_file(make_cfg, tmp_path):
    # Prepare: the reference, and a run whose checkpoints go to another directory
    ckpt_dir = tmp_path / "elsewhere"
    run(make_cfg("server.max_steps=18", name="reference"))
    base = ["checkpoint.every_n_steps=4", f"checkpoint.dir={ckpt_dir}"]
    run(make_cfg(*base, "resume=auto"))
    before = sorted(p.name for p in ckpt_dir.iterdir())

    # Execute: resume=auto (the same command with more steps), then resume=RUN, then resume=FILE
    auto = run(make_cfg(*base, "resume=auto", "server.max_steps=14"))
    by_dir = run(compose(["progress=false", "server.eval_every=6", *base, f"resume={tmp_path / 'run'}", "server.max_steps=16"]))
    last = find_checkpoint(ckpt_dir)
    by_file = run(compose(["progress=false", "server.eval_every=6", *base, f"output_dir={tmp_path / 'run'}", f"resume={last}", "server.max_steps=18"]))

    # Assert: each continued the run (never a new one), and the files stayed where they belong
    assert (auto["steps"], by_dir["steps"], by_file["steps"]) == (14, 16, 18)
    assert before and all(p.name.startswith("checkpoint-") for p in ckpt_dir.iterdir())
    assert (tmp_path / "run" / "final_model.pt").read_bytes() == (tmp_path / "reference" / "final_model.pt").read_bytes()


# -- what changes the bytes may not change on resume ----------------------------------------------


def test_a_resume_that_would_change_the_bytes_is_refused_unless_allowed_and_then_recorded(make_cfg, tmp_path):
    # Prepare: one intra-op thread, so that 2 differs on any machine (auto would resume with the checkpoint's number)
    run(make_cfg("executor.num_threads=1"))
    resume = ["progress=false", f"resume={tmp_path / 'run'}", "server.max_steps=16", "server.eval_every=6"]

    # Execute / Assert: more intra-op threads, or the batched executor, change the sums' order
    with pytest.raises(ConfigError) as error:
        run(compose([*resume, "executor.num_threads=2"]))
    assert "executor.num_threads: the checkpoint's run has 1, this command gives 2" in str(error.value)
    assert "resume_inexact=true" in str(error.value)
    with pytest.raises(ConfigError, match="executor._target_: the checkpoint's run has 'lightning_asyncfl.executors.SequentialExecutor'"):
        run(compose([*resume, "executor=batched"]))

    # allowed explicitly: the run goes on, and its summary says the continuation is not identical
    summary = run(compose([*resume, "executor.num_threads=2", "resume_inexact=true"]))
    assert summary["steps"] == 16
    assert summary["continuation"] == {"identical": False, "changed": ["executor.num_threads: 1 -> 2 (at version 12)"]}
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["continuation"]["identical"] is False


# -- weights in a checkpoint: checked, and a damaged latest one falls back to the previous ----------


def test_a_checkpoint_with_non_finite_global_weights_is_refused(make_cfg, tmp_path):
    # Prepare
    run(make_cfg())

    crafted = _crafted(find_checkpoint(tmp_path / "run"), tmp_path / "nan.ckpt", lambda state: state["global"]["flat"].fill_(float("nan")))

    # Execute / Assert
    with pytest.raises(ConfigError, match="global weights hold NaN or infinite values"):
        run(compose(["progress=false", f"output_dir={tmp_path / 'run'}", f"resume={crafted}", "server.eval_every=6"]))


def test_a_flipped_bit_is_caught_by_the_checksum_and_a_damaged_latest_checkpoint_falls_back(make_cfg, tmp_path, caplog):
    # Prepare: two checkpoints; flip one bit of the latest's weights
    run(make_cfg(*EVERY))
    checkpoints = [p for _, p in list_checkpoints(tmp_path / "run" / "checkpoints")]
    latest, previous = checkpoints[-1], checkpoints[-2]
    flipped = tmp_path / "flipped.ckpt"
    raw = bytearray(latest.read_bytes())
    state = torch.load(latest, weights_only=True)
    needle = state["global"]["flat"][:4].numpy().tobytes()
    at = raw.find(needle)
    assert at > 0
    raw[at] ^= 0x01
    flipped.write_bytes(bytes(raw))

    # Execute / Assert: the file itself is refused with the reason
    with pytest.raises(InvalidValue, match="checksum"):
        load_checkpoint(flipped)

    # a truncated latest checkpoint in the run: resume=RUN warns and continues from the previous one
    latest.write_bytes(latest.read_bytes()[: len(raw) // 2])
    caplog.set_level("WARNING")
    summary = run(compose([*SMALL, f"resume={tmp_path / 'run'}", *EVERY]))
    assert summary["status"] == "completed" and summary["steps"] == 12
    assert any(latest.name in r.getMessage() and previous.name in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


# -- SIGTERM, what Slurm and Kubernetes send, is handled like Ctrl-C -------------------------------


def _session_gone(pgid: int, within: float) -> float | None:
    """Seconds until no process of session ``pgid`` is left, or None if some remain after ``within``."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def test_sigterm_writes_a_checkpoint_and_an_interrupted_summary_exits_143_and_leaves_no_process(tmp_path):
    # Prepare: a run with worker processes
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "lightning_asyncfl", *LONG, "executor=processes", "executor.workers=2", f"output_dir={out}"],
        cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    _wait_for_checkpoints(process, out, 1)

    # Execute
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)

    # Assert
    assert process.returncode == 143, output[-3000:]
    assert _session_gone(process.pid, within=5.0) is not None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["accounting"]["balanced"]
    state = load_checkpoint(out / summary["last_checkpoint"])
    assert state["version"] == summary["steps"]


@pytest.mark.slow  # about a minute: workers must start before the parent is killed
def test_worker_processes_exit_promptly_when_their_parent_dies(tmp_path):
    # Prepare
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "lightning_asyncfl", *LONG, "executor=processes", "executor.workers=2", f"output_dir={out}"],
        cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _wait_for_checkpoints(process, out, 1)

    # Execute: the parent alone is killed
    process.kill()
    process.wait(timeout=30)

    # Assert
    gone = _session_gone(process.pid, within=10.0)
    assert gone is not None and gone < 2.0, gone
