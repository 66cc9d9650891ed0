"""Bad configs fail before any training, naming the key, the bad value and what is allowed."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from lightning_asyncfl.errors import ConfigError, RunFailed
from lightning_asyncfl.models.mlp import MLP
from lightning_asyncfl.run import build, compose, run


def _run_fails(cfg) -> ConfigError:
    """run(cfg) raises ConfigError without training: no updates.csv, no final model."""
    out = Path(cfg.output_dir)
    with pytest.raises(ConfigError) as info:
        run(cfg)
    assert not (out / "updates.csv").exists()
    assert not (out / "final_model.pt").exists()
    return info.value


@pytest.mark.parametrize(
    ("overrides", "key", "fragments"),
    [
        (["server.aggregator.staleness=foo"], "server.aggregator.staleness", ["'foo'", "constant", "polynomial", "hinge"]),
        (["server.aggregator.alpha=1.5"], "server.aggregator.alpha", ["1.5", "(0, 1]"]),
        (["server.aggregator.alpha=0"], "server.aggregator.alpha", ["got 0", "(0, 1]"]),
        (["server.aggregator.a=-1"], "server.aggregator.a", ["-1", ">= 0"]),
        (["server=fedbuff", "server.aggregator.staleness=foo"], "server.aggregator.staleness", ["'foo'", "constant, polynomial, hinge"]),
        (["delay=per_client", "delay.file=/nonexistent/stale.txt"], "delay.file", ["/nonexistent/stale.txt", "existing file"]),
    ],
    ids=["staleness=foo", "alpha=1.5", "alpha=0", "a=-1", "fedbuff-staleness=foo", "missing-delay-file"],
)
def test_bad_value_is_reported_with_key_value_and_what_is_allowed(overrides, key, fragments, make_cfg):
    # Prepare
    cfg = make_cfg(*overrides)

    # Execute
    error = _run_fails(cfg)

    # Assert: exactly one problem, which names the full key (not a prefix of a longer key)
    assert len(error.problems) == 1
    problem = error.problems[0]
    assert re.match(rf"{re.escape(key)}\b(?!\.)", problem), problem
    for fragment in fragments:
        assert fragment in problem
    assert problem in str(error)


def test_more_clients_than_samples_names_num_clients_and_the_sample_count(make_cfg):
    # Prepare
    samples = sum(build(make_cfg(name="ok"))["data"].num_samples)
    cfg = make_cfg("data.num_clients=5000")

    # Execute
    error = _run_fails(cfg)

    # Assert
    assert len(error.problems) == 1
    assert error.problems[0].startswith("data.num_clients ")
    assert "5000" in error.problems[0]
    assert str(samples) in error.problems[0]


def test_three_problems_in_one_config_are_reported_together(make_cfg):
    # Prepare: one bad key in each of three nodes
    cfg = make_cfg("server.aggregator.alpha=2", "server.max_steps=0", "data.num_clients=5000")

    # Execute
    error = _run_fails(cfg)

    # Assert
    assert len(error.problems) == 3
    keys = sorted(problem.split(" ", 1)[0] for problem in error.problems)
    assert keys == ["data.num_clients", "server.aggregator.alpha", "server.max_steps"]
    assert "3 problem" in str(error)
    for problem in error.problems:
        assert problem in str(error)


def test_unknown_group_option_fails_at_compose_time_listing_the_available_options(tmp_path):
    # Execute
    with pytest.raises(ConfigCompositionException) as info:
        compose(["server=nope", f"output_dir={tmp_path}"])

    # Assert
    text = str(info.value)
    assert "nope" in text
    assert "fedasync" in text and "fedbuff" in text and "fedavg" in text


def test_cli_bad_value_exits_2_with_a_message_and_no_traceback(tmp_path):
    # Prepare
    out = tmp_path / "out"

    # Execute
    result = subprocess.run(
        [sys.executable, "-m", "lightning_asyncfl", "server.aggregator.alpha=2", f"output_dir={out}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    # Assert
    assert result.returncode == 2, result.stderr
    assert "server.aggregator.alpha" in result.stderr
    assert re.search(r"server\.aggregator\.alpha must be .*got 2\b", result.stderr), result.stderr
    assert not any(line.startswith("Traceback") for line in (result.stderr + result.stdout).splitlines())
    assert not (out / "updates.csv").exists()


def test_every_bad_key_of_one_object_is_reported(make_cfg):
    cfg = make_cfg("server.aggregator.alpha=2", "server.aggregator.staleness=hinge", "server.aggregator.a=-1", "server.aggregator.b=-3", "client.epochs=0", "client.batch_size=0")

    with pytest.raises(ConfigError) as info:
        run(cfg)

    assert info.value.problems == [
        "client.epochs must be an integer >= 1, got 0",
        "client.batch_size must be an integer >= 1, got 0",
        "server.aggregator.alpha must be a number in (0, 1], got 2",
        "server.aggregator.a must be a finite number >= 0, got -1",
        "server.aggregator.b must be a finite number >= 0, got -3",
    ]


def test_seed_eval_precision_and_an_unimportable_target_are_reported(make_cfg):
    cfg = make_cfg("seed=-1", "eval.batch_size=0", "client.precision=64-true", "server.aggregator._target_=nomodule.X")

    with pytest.raises(ConfigError) as info:
        run(cfg)

    problems = info.value.problems
    assert problems[:3] == [
        "seed must be an integer >= 0, got -1",
        "eval.batch_size must be an integer >= 1, got 0",
        "client.precision must be one of: 32-true, 32, bf16-mixed, 16-mixed, got '64-true'",
    ]
    assert problems[3].startswith("server.aggregator: Error loading 'nomodule.X'")
    assert "No module named 'nomodule'" in problems[3]


def test_a_partition_that_cannot_split_the_data_names_the_partition_key(make_cfg):
    cfg = make_cfg("partition.min_samples=100")  # 20 clients x 100 > 1438 training samples

    with pytest.raises(ConfigError) as info:
        run(cfg)

    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("partition.min_samples must be")


# -- what used to be a traceback is a message, before any training ------------------------------


def _cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lightning_asyncfl", "progress=false", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["checkpoint.dir=/dev/null/x"], "checkpoint.dir must be a directory this process can create and write, got '/dev/null/x' (/dev/null is not a directory)"),
        (["server.max_steps=true"], "server.max_steps must be an integer >= 1, got True"),
        (["delay=constant", "delay.value=1e308"], "delay.value must be <= 1e+09 (virtual seconds), got 1e+308"),
    ],
    ids=["checkpoint-dir-under-a-file", "max_steps=true", "delay=1e308"],
)
def test_values_that_used_to_fail_mid_run_are_config_errors(overrides, fragment, make_cfg):
    assert fragment in str(_run_fails(make_cfg(*overrides)))


@pytest.mark.parametrize("output_dir", ["/dev/null/x", "/proc/asyncfl-run"])
def test_an_output_dir_that_cannot_be_written_is_a_message_from_run_and_from_the_cli(output_dir, make_cfg, tmp_path):
    # run(): a ConfigError naming output_dir
    with pytest.raises(ConfigError, match=f"output_dir must be a directory this process can create and write, got '{output_dir}'"):
        run(make_cfg(f"output_dir={output_dir}"))

    # the command line: exit 2, the message, no traceback
    result = _cli(f"output_dir={output_dir}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "output_dir must be a directory this process can create and write" in result.stderr and "Traceback" not in result.stderr


def test_a_target_of_the_wrong_type_names_each_key_and_the_class_it_needs(make_cfg):
    # Execute
    text = str(_run_fails(make_cfg(
        "server.aggregator._target_=collections.Counter", "server.scheduler._target_=collections.Counter",
        "delay._target_=collections.Counter", "executor._target_=collections.Counter", "+callbacks.mine._target_=collections.Counter",
    )))  # fmt: skip

    # Assert
    for line in (
        "server.aggregator._target_ must be a lightning_asyncfl.aggregators.base.AsyncAggregator, got Counter",
        "server.scheduler._target_ must be a lightning_asyncfl.schedulers.base.Scheduler, got Counter",
        "delay._target_ must be a lightning_asyncfl.delays.DelayModel, got Counter",
        "executor._target_ must be a lightning_asyncfl.executors.base.Executor, got Counter",
        "callbacks.mine._target_ must be a lightning_asyncfl.callbacks.base.Callback, got Counter",
    ):
        assert line in text


def test_a_delay_file_that_is_not_text_names_the_file_key(make_cfg, tmp_path):
    # Prepare
    binary = tmp_path / "stale.bin"
    binary.write_bytes(bytes(range(256)) * 4)

    # Execute / Assert
    text = str(_run_fails(make_cfg("delay=per_client", f"delay.file={binary}")))
    assert f"delay.file must be a text file with one number per line, got '{binary}'" in text


@pytest.mark.parametrize("address", ["127.0.0.1:1", "auto"])
def test_a_ray_cluster_that_cannot_be_reached_is_a_message_within_seconds(address, make_cfg, tmp_path):
    # Execute
    started = time.monotonic()
    with pytest.raises(ConfigError) as error:
        run(make_cfg("executor=ray", f"executor.address={address}", "executor.connect_timeout=5"))

    # Assert
    assert time.monotonic() - started < 60
    assert f"executor.address: cannot reach a Ray cluster at {address!r}" in str(error.value)


class DiesInWorker(MLP):
    """A model that kills the worker process that unpickles it (a worker killed during start-up)."""

    def __setstate__(self, state):
        super().__setstate__(state)
        if multiprocessing.parent_process() is not None:
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow  # a worker process must import torch before it dies
def test_a_worker_process_killed_during_start_up_is_a_message(make_cfg, tmp_path):
    with pytest.raises(RunFailed, match=r"worker process asyncfl-worker-0 exited with code -9 before it was ready"):
        run(make_cfg("executor=processes", "executor.workers=1", "model._target_=tests.test_errors.DiesInWorker"))
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"


@pytest.mark.parametrize(
    "text",
    ['- !!python/object/apply:os.system ["touch {marker}"]\n', "[" * 5000 + "]" * 5000 + "\n", "a: [unclosed\n"],
    ids=["python-tag", "deep-nesting", "syntax"],
)
def test_compare_reads_a_malicious_overrides_yaml_as_a_message(text, tmp_path, capsys):
    # Prepare: a run directory someone sent, with a crafted .hydra/overrides.yaml
    from lightning_asyncfl.compare import main

    marker = tmp_path / "ran"
    run_dir = tmp_path / "sent"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "metrics.csv").write_text("version,client_updates,virtual_time,wall_time,test_accuracy\n0,0,0.0,0.0,0.1\n")
    (run_dir / ".hydra" / "overrides.yaml").write_text(text.format(marker=marker))

    # Execute
    code = main([str(run_dir)])

    # Assert
    assert code == 2 and not marker.exists()
    assert "overrides.yaml is not a list of overrides" in capsys.readouterr().err


def test_a_full_disk_is_a_message_and_keeps_the_last_good_files(tmp_path):
    # Prepare: a 1 MiB file system, which fills up after a few checkpoints
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs is not permitted here")
    try:
        # Execute
        result = _cli(f"output_dir={disk / 'run'}", "checkpoint.every_n_steps=1", "checkpoint.keep_last=100", "server.max_steps=60", cwd=tmp_path)

        # Assert: exit 1 with one message, no traceback; what is on disk is whole
        assert result.returncode == 1, result.stderr[-3000:]
        assert "error: the disk is full" in result.stderr and "Traceback" not in result.stderr
        summary = disk / "run" / "summary.json"
        assert not summary.exists() or json.loads(summary.read_text())["status"] == "failed"
        from lightning_asyncfl.checkpoint import list_checkpoints, load_checkpoint

        checkpoints = list_checkpoints(disk / "run" / "checkpoints")
        assert checkpoints and load_checkpoint(checkpoints[-1][1])["version"] >= 1
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_validate_collects_a_typed_validators_problem_with_the_others():
    from lightning_asyncfl.errors import InvalidValues, checking, positive_int, probability, validate

    with pytest.raises(InvalidValues) as info:
        with checking() as check:
            assert validate(check, positive_int, "buffer_size", 4) == 4
            validate(check, positive_int, "k", 0)
            validate(check, probability, "alpha", 0.0, open_low=True)
            check(False, "b", -1, ">= 0")

    assert [str(p) for p in info.value.problems] == [
        "k must be an integer >= 1, got 0", "alpha must be a number in (0, 1], got 0.0", "b must be >= 0, got -1"
    ]  # fmt: skip


def test_random_interval_reports_both_bad_values_at_once():
    from lightning_asyncfl.errors import InvalidValues
    from lightning_asyncfl.schedulers import RandomIntervalScheduler

    with pytest.raises(InvalidValues) as info:
        RandomIntervalScheduler(interval=0, fraction=1.5)

    assert [str(p) for p in info.value.problems] == ["interval must be a finite number > 0, got 0", "fraction must be a number in (0, 1], got 1.5"]
