"""Threads, processes and Ray give the sequential executor's bytes; faults fail only their job."""

from __future__ import annotations

import os
import re
import sys
import threading

import pytest
import torch

from lightning_asyncfl.errors import ConfigError
from lightning_asyncfl.executors import ProcessExecutor, ThreadExecutor
from lightning_asyncfl.run import run
from lightning_asyncfl.state import Job, JobResult
from tests.helpers import children_left, parent_pid, flat_state

SMALL_RUN = ["server.max_steps=30", "server.eval_every=15"]
FAIL = ["client_algorithm._target_=tests.executors.faults.FailJobs", "+client_algorithm.jobs=[3,11]"]


def _weights(summary: dict) -> dict[str, torch.Tensor]:
    return torch.load(os.path.join(summary["output_dir"], "final_model.pt"), weights_only=True)


def assert_same_bytes(a: dict, b: dict) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"tensors differ: {different}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _shm() -> set[str]:
    """torch's shared-memory segments whose creating process has exited (torch names them
    ``torch_<pid>_...``): what a run leaves behind. A segment of a live process belongs to
    work still running (another test process when the suite runs in parallel)."""
    if not os.path.isdir("/dev/shm"):
        return set()
    left = set()
    for name in os.listdir("/dev/shm"):
        if "torch" not in name:
            continue
        match = re.match(r"torch_(\d+)_", name)
        if match is None or not _alive(int(match.group(1))):
            left.add(name)
    return left


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The sequential executor's run of the default experiment (FedAsync, digits), shrunk, one thread per job like make_cfg's runs."""
    from lightning_asyncfl.run import compose

    out = tmp_path_factory.mktemp("sequential")
    return run(compose([f"output_dir={out}", "progress=false", "executor.num_threads=1", *SMALL_RUN]))


def test_threads_give_the_sequential_bytes(make_cfg, reference):
    summary = run(make_cfg("executor=threads", "executor.workers=2", *SMALL_RUN))

    assert summary["client_updates"] == reference["client_updates"]
    assert_same_bytes(summary, reference)


@pytest.mark.parametrize("start_method", ["auto", "forkserver"])  # auto: forked by the zygote conftest started
def test_processes_give_the_sequential_bytes_and_leave_nothing_behind(make_cfg, reference, start_method):
    shm_before = _shm()

    summary = run(make_cfg("executor=processes", "executor.workers=2", f"executor.start_method={start_method}", *SMALL_RUN))

    assert_same_bytes(summary, reference)
    assert children_left() == []
    assert _shm() == shm_before


def test_scaffold_client_state_travels_to_worker_processes(make_cfg):
    # c_i is kept by the loop and sent with each job: processes must match sequential
    args = ["server=scaffold", "server.max_steps=3", "server.eval_every=3", "data.num_clients=6", "server.scheduler.clients_per_round=3", "server.aggregator.clients_per_round=3"]
    sequential = run(make_cfg(*args, name="seq"))
    processes = run(make_cfg(*args, "executor=processes", name="proc"))

    assert_same_bytes(processes, sequential)


def test_an_exception_inside_a_worker_fails_only_its_job(make_cfg):
    sequential = run(make_cfg(*FAIL, *SMALL_RUN, name="seq"))
    processes = run(make_cfg(*FAIL, *SMALL_RUN, "executor=processes", name="proc"))
    threads = run(make_cfg(*FAIL, *SMALL_RUN, "executor=threads", name="threads"))

    assert sequential["failed"] == processes["failed"] == threads["failed"] == 2
    assert_same_bytes(processes, sequential)
    assert_same_bytes(threads, sequential)
    updates = (os.path.join(processes["output_dir"], "updates.csv"))
    text = open(updates).read()
    assert "injected failure in job 3" in text and "injected failure in job 11" in text


@pytest.mark.parametrize("start_method", ["auto", "forkserver"])
def test_a_worker_process_killed_mid_job_fails_that_job_and_the_run_goes_on(make_cfg, start_method):
    # the killed job fails like a raising one: the rest of the run is the same bytes
    raised = run(make_cfg(*FAIL, *SMALL_RUN, name="raised"))
    killed = run(make_cfg(*FAIL, "+client_algorithm.kill=true", *SMALL_RUN, "executor=processes", f"executor.start_method={start_method}", name="killed"))

    assert killed["failed"] == 2 and killed["steps"] == raised["steps"]
    assert_same_bytes(killed, raised)
    assert children_left() == []
    text = open(os.path.join(killed["output_dir"], "updates.csv")).read()
    assert "WorkerLost" in text and "exit code -9" in text


def test_an_exception_in_the_loop_stops_every_worker(make_cfg):
    from lightning_asyncfl.executors import JobFailed

    with pytest.raises(JobFailed, match="injected failure in job 3"):
        run(make_cfg(*FAIL, *SMALL_RUN, "executor=processes", "server.on_client_error=raise"))

    assert children_left() == []


@pytest.mark.slow
def test_a_ray_actor_killed_mid_job_fails_that_job_and_ray_restarts_it(make_cfg):
    pytest.importorskip("ray", reason="Ray is the optional extra lightning-asyncfl[ray]")
    raised = run(make_cfg(*FAIL, *SMALL_RUN, name="raised"))
    killed = run(make_cfg(*FAIL, "+client_algorithm.kill=true", *SMALL_RUN, "executor=ray", "executor.init_num_cpus=2", name="killed"))

    assert killed["failed"] == 2
    assert_same_bytes(killed, raised)
    assert "WorkerLost" in open(os.path.join(killed["output_dir"], "updates.csv")).read()


def test_ray_gives_the_sequential_bytes_on_a_local_two_cpu_ray(make_cfg, reference):
    pytest.importorskip("ray", reason="Ray is the optional extra lightning-asyncfl[ray]")
    summary = run(make_cfg("executor=ray", "executor.init_num_cpus=2", *SMALL_RUN))

    assert_same_bytes(summary, reference)
    import ray

    assert not ray.is_initialized()  # the executor shut down the Ray it started


def test_ray_missing_gives_the_install_command(make_cfg, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError

    with pytest.raises(ImportError, match=r'pip install "lightning-asyncfl\[ray\]"'):
        run(make_cfg("executor=ray"))


def test_bad_executor_settings_are_config_errors_naming_each_key(make_cfg):
    with pytest.raises(ConfigError) as error:
        run(make_cfg("executor=processes", "executor.workers=0", "executor.num_threads=-1", "executor.devices=[tpu:0]"))

    text = str(error.value)
    assert "executor.workers must be an integer >= 1, got 0" in text
    assert "executor.num_threads must be auto (the cores available), null (torch's default) or an integer >= 1, got -1" in text
    assert "executor.devices must be null, auto, or a non-empty list" in text


def test_unpicklable_trainer_factory_is_a_clear_error():
    executor = ProcessExecutor(workers=1)

    with pytest.raises(TypeError, match="must be picklable"):
        executor.start(lambda: None)
    executor.shutdown()


class _Trainer:
    """Trains nothing: records the order of jobs and returns the base; the first job waits for a go."""

    device = torch.device("cpu")

    def __init__(self, order: list[int], go: threading.Event) -> None:
        self.order, self.go = order, go

    def train(self, job, base, client_state=None):
        self.go.wait(timeout=10)
        self.order.append(job.job_id)
        return JobResult(base, {"job": float(job.job_id)})


def _job(job_id: int, arrival: float, version: int = 0) -> Job:
    return Job(job_id=job_id, client_id=job_id, base_version=version, seed=job_id, dispatch_time=0.0, arrival_time=arrival)


def test_pool_trains_the_job_needed_first_and_frees_a_version_when_its_last_job_is_done():
    # Prepare: one worker, blocked on job 0 while jobs 1-3 queue with arrivals 3, 1, 2
    order, go = [], threading.Event()
    executor = ThreadExecutor(workers=1)
    executor.start(lambda: _Trainer(order, go))
    state = flat_state([1.0, 2.0])
    jobs = [_job(0, 0.5), _job(1, 3.0, version=1), _job(2, 1.0, version=1), _job(3, 2.0, version=2)]

    # Execute
    for job in jobs:
        executor.submit(job, state)
    held = sorted(executor._snapshots)
    go.set()
    results = [executor.result(job) for job in sorted(jobs, key=lambda j: j.arrival_time)]
    executor.shutdown()

    # Assert
    assert order == [0, 2, 3, 1]
    assert held == [0, 1, 2]
    assert [r.metrics["job"] for r in results] == [0.0, 2.0, 3.0, 1.0]
    assert executor._snapshots == {}


def test_clock_wall_sleeps_the_delays_and_handles_arrivals_as_jobs_finish(make_cfg):
    summary = run(make_cfg("clock=wall", "executor=threads", "delay=constant", "delay.value=0.05",
                           "server.max_steps=8", "server.eval_every=4", "server.scheduler.concurrency=2"))

    assert summary["steps"] == 8
    assert summary["virtual_time"] >= 8 / 2 * 0.05  # each of 2 slots spent >= 4 delays
    assert summary["virtual_time"] <= summary["wall_time"] + 1e-6


def test_clock_must_be_virtual_or_wall(make_cfg):
    with pytest.raises(ConfigError, match="clock must be one of: virtual, wall, got 'sundial'"):
        run(make_cfg("clock=sundial"))


def _session_processes(sid: int) -> list[int]:
    """Pids of live processes in session ``sid`` (zombies excluded)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def _cmdline(pid: int) -> bytes:
    return open(f"/proc/{pid}/cmdline", "rb").read()


@pytest.mark.parametrize("executor", ["processes", "threads"])
def test_ctrl_c_stops_every_worker_and_exits_130(tmp_path, executor):
    import signal
    import subprocess
    import time

    # Prepare: a long run in its own session, so every process it starts can be found
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "lightning_asyncfl", f"executor={executor}", "server.max_steps=100000", "progress=false", f"output_dir={out}"],
        cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        updates = out / "updates.csv"
        if updates.is_file() and updates.read_text().count("\n") > 20:  # training is under way
            break
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()[0][-3000:]
    if executor == "processes":  # the loop, its zygote (a fork of it: the same command line) and the zygote's two workers
        parents = {pid: parent_pid(pid) for pid in _session_processes(process.pid)}
        zygotes = [pid for pid, parent in parents.items() if parent == process.pid and _cmdline(pid) == _cmdline(process.pid)]
        assert len(zygotes) == 1, parents
        assert sum(parent == zygotes[0] for parent in parents.values()) == 2, parents

    # Execute
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)

    # Assert
    assert process.returncode == 130, output[-3000:]
    assert "interrupted" in output
    deadline = time.monotonic() + 10
    while _session_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _session_processes(process.pid) == []
