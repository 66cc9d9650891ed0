"""FedScale's device and behaviour traces drive a run; a trace file never runs code."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import pytest

from lightning_asyncfl.errors import ConfigError
from lightning_asyncfl.run import build, run
from lightning_asyncfl.system import FedScaleDevices, read_trace
from lightning_asyncfl.system.behaviour import FedScaleAvailability

# FedScale's formats: client id -> {computation: ms/sample, communication: kbit/s} and
# client id -> {active: [...], inactive: [...], finish_time: T, ...}
DEVICES = {1: {"computation": 12.5, "communication": 800.0}, 2: {"computation": 40.0, "communication": 2000.0},
           3: {"computation": 5.0, "communication": 300.0}}  # fmt: skip
BEHAVIOUR = {
    1: {"duration": 100, "active": [0.0, 50.0], "inactive": [40.0, 100.0], "finish_time": 100.0, "model": "x"},
    2: {"duration": 100, "active": [10.0], "inactive": [30.0], "finish_time": 60.0, "model": "y"},
}


class _Evil:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (self.path, "owned"))


def _updates(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "updates.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_a_fedscale_device_pickle_drives_a_run_with_fedscales_arithmetic(make_cfg, tmp_path):
    # Prepare: the trace as FedScale ships it, a pickle of plain dicts
    trace = tmp_path / "client_device_capacity"
    trace.write_bytes(pickle.dumps(DEVICES))

    # Execute
    summary = run(make_cfg("system=fedscale", f"system.devices.file={trace}"))

    # Assert: client k has entry k % 3 (file order); compute = 3 x examples x ms / 1000, bytes*8/1000/kbps each way
    entries = list(DEVICES.values())
    size = summary["model_bytes"]
    rows = _updates(Path(summary["output_dir"]))
    assert summary["status"] == "completed" and rows
    for row in rows:
        entry = entries[int(row["client_id"]) % 3]
        assert float(row["compute_time"]) == 3.0 * int(row["examples"]) * entry["computation"] / 1000.0
        assert float(row["download_time"]) == float(row["upload_time"]) == size / (entry["communication"] * 1000.0 / 8.0)


def test_the_same_trace_as_json_and_csv_reads_the_same(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps({str(k): v for k, v in DEVICES.items()}))
    (tmp_path / "d.csv").write_text("client_id,computation,communication\n" + "".join(f"{k},{v['computation']},{v['communication']}\n" for k, v in DEVICES.items()))
    (tmp_path / "d.pkl").write_bytes(pickle.dumps(DEVICES))
    entries = [FedScaleDevices(file=str(tmp_path / name)).entries for name in ("d.json", "d.csv", "d.pkl")]
    assert entries[0] == entries[1] == entries[2] == [(12.5, 800.0, 800.0), (40.0, 2000.0, 2000.0), (5.0, 300.0, 300.0)]


def test_reference_flops_scale_the_traces_compute_with_the_model(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps({"1": {"computation": 10.0, "communication": 100.0}}))
    devices = FedScaleDevices(file=str(tmp_path / "d.json"), reference_flops=1000.0)
    devices.setup(2, None)
    assert devices.compute_seconds(1, 50, 4000.0) == 3.0 * 50 * 10.0 / 1000.0 * 4.0


def test_a_malicious_pickle_in_place_of_a_trace_runs_no_code(make_cfg, tmp_path):
    # Prepare: a pickle that would write a file when loaded with pickle.load
    target = tmp_path / "pwned.txt"
    evil = tmp_path / "client_device_capacity"
    evil.write_bytes(pickle.dumps({1: _Evil(target)}))
    behave = tmp_path / "client_behave_trace"
    behave.write_bytes(pickle.dumps(_Evil(target)))

    # Execute: as a device trace and as a behaviour trace, through the config
    with pytest.raises(ConfigError) as error:
        build(make_cfg("system=fedscale", f"system.devices.file={evil}", "availability=fedscale", f"availability.file={behave}"))

    # Assert: refused with a message naming both keys, and no file was written
    assert not target.exists()
    assert "system.devices.file" in str(error.value) and "availability.file" in str(error.value)
    assert "plain data" in str(error.value)


def test_plain_data_of_every_kind_comes_out_of_a_pickle(tmp_path):
    data = {"a": [1, 2.5, "x", None, True, (1, 2)], 3: {"b": b"raw"}}
    (tmp_path / "t.pkl").write_bytes(pickle.dumps(data))
    assert read_trace(tmp_path / "t.pkl") == data


def test_a_missing_or_malformed_trace_is_a_clear_error(make_cfg, tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"1": {"computation": -1, "communication": 5}}))
    for file, words in ((tmp_path / "none.pkl", "an existing trace file"), (tmp_path / "bad.json", "> 0")):
        with pytest.raises(ConfigError) as error:
            build(make_cfg("system=fedscale", f"system.devices.file={file}"))
        assert "system.devices" in str(error.value) and words in str(error.value)


def test_the_behaviour_trace_is_read_as_fedscale_reads_it(tmp_path):
    # Prepare
    (tmp_path / "b.pkl").write_bytes(pickle.dumps(BEHAVIOUR))
    availability = FedScaleAvailability(file=str(tmp_path / "b.pkl"))
    availability.setup(3, None)

    # Assert: online iff active_j <= t mod T <= inactive_j; client 2 follows entry 0 again
    for t, online in ((0.0, {0, 2}), (39.0, {0, 2}), (40.0, set()), (45.0, set()), (20.0, {0, 1, 2}), (125.0, {0, 2}), (130.0, {0, 1, 2}), (75.0, {0, 1, 2})):
        assert set(availability.filter([0, 1, 2], t)) == online, t
    assert availability.next_change(45.0) == 50.0
    assert availability.next_change(35.0) == 50.0  # client 1's next start is 70, client 0's 50


def test_a_behaviour_trace_drives_a_run_and_jobs_that_outlast_the_clients_session_drop(make_cfg, tmp_path):
    # Prepare: sessions short enough for some jobs of slow clients to outlast them
    trace = {k: {"active": [0.0, 0.05], "inactive": [0.02, 0.09], "finish_time": 0.1} for k in range(4)}
    trace[4] = {"active": [0.0], "inactive": [0.1], "finish_time": 0.1}  # always online
    (tmp_path / "b.json").write_text(json.dumps({str(k): v for k, v in trace.items()}))

    # Execute
    summary = run(make_cfg("availability=fedscale", f"availability.file={tmp_path / 'b.json'}", "server.max_steps=30"))

    # Assert: nobody is dispatched offline, exactly the jobs that would outlast their client's session drop, the books balance
    availability = FedScaleAvailability(file=str(tmp_path / "b.json"))
    availability.setup(summary["num_clients"], None)
    rows = _updates(Path(summary["output_dir"]))
    assert summary["accounting"]["balanced"] and summary["dropped"] > 0
    for row in rows:
        client, start = int(row["client_id"]), float(row["dispatch_time"])
        assert availability.online(client, start)
        session_end = availability._clients[client].online_until(start)
        assert (row["status"] == "dropped") == (float(row["arrival_time"]) > session_end)
