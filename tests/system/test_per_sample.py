"""``system=per_sample``: a job computes for examples processed x its client's seconds per sample, exactly."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from lightning_asyncfl.errors import ConfigError
from lightning_asyncfl.run import run
from lightning_asyncfl.system import PerSampleDevices, SystemModel

SPEEDS = [0.5, 0.25, 2.0, 0.125]


def test_compute_time_is_examples_times_the_clients_factor_and_communication_free():
    # Prepare
    system = SystemModel(devices=PerSampleDevices(seconds_per_sample=SPEEDS))
    system.setup([10, 20, 30, 7], np.random.default_rng(0))
    system.set_work(epochs=3, flops_per_example=1e9)

    # Execute
    costs = [system.cost(k, download_bytes=1000, upload_bytes=1000, rng=np.random.default_rng(0)) for k in range(4)]

    # Assert
    assert [c.compute_time for c in costs] == [30 * 0.5, 60 * 0.25, 90 * 2.0, 21 * 0.125]
    assert [c.total for c in costs] == [15.0, 15.0, 180.0, 2.625]
    assert {c.download_time for c in costs} == {c.upload_time for c in costs} == {0.0}


def test_bandwidths_add_bytes_over_bandwidth():
    system = SystemModel(devices=PerSampleDevices(seconds_per_sample=[1.0], download=500.0, upload=250.0))
    system.setup([4], np.random.default_rng(0))
    system.set_work(epochs=1, flops_per_example=0.0)

    cost = system.cost(0, download_bytes=1000, upload_bytes=1000, rng=np.random.default_rng(0))

    assert (cost.download_time, cost.compute_time, cost.upload_time) == (2.0, 4.0, 4.0)


def test_a_run_times_every_job_by_its_clients_samples_and_factor(make_cfg):
    # Prepare
    speeds = "[" + ",".join(str(s) for s in SPEEDS) + "]"
    cfg = make_cfg("system=per_sample", f"system.devices.seconds_per_sample={speeds}", "data.num_clients=4", "partition=iid",
                   "server.scheduler.concurrency=2", "client.epochs=2")  # fmt: skip

    # Execute
    summary = run(cfg)

    # Assert: arrival - dispatch is exactly samples x epochs x the client's seconds per sample
    rows = list(csv.DictReader(open(f"{summary['output_dir']}/updates.csv")))
    assert rows
    for row in rows:
        k, n = int(row["client_id"]), int(row["num_samples"])
        assert float(row["compute_time"]) == (n * 2) * SPEEDS[k]
        assert float(row["arrival_time"]) - float(row["dispatch_time"]) == pytest.approx((n * 2) * SPEEDS[k], rel=1e-12)


def test_speeds_from_a_file_and_the_wrong_count_names_the_key(tmp_path, make_cfg):
    # Prepare
    (tmp_path / "speeds.txt").write_text("0.5\n\n0.25\n")
    (tmp_path / "speeds.json").write_text(json.dumps(SPEEDS))

    # Execute
    from_text = PerSampleDevices(file=str(tmp_path / "speeds.txt"))
    from_json = PerSampleDevices(file=str(tmp_path / "speeds.json"))
    with pytest.raises(ConfigError) as error:
        run(make_cfg("system=per_sample", f"system.devices.file={tmp_path / 'speeds.txt'}", "data.num_clients=4", "partition=iid"))

    # Assert
    assert from_text.seconds_per_sample == (0.5, 0.25) and from_json.seconds_per_sample == tuple(SPEEDS)
    assert f"system.seconds_per_sample must be one value per client (4), got '2 values (read from {tmp_path / 'speeds.txt'})'" in str(error.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "seconds_per_sample must be one number > 0 per client, or null with system.devices.file set (exactly one of the two), got None"),
        ({"seconds_per_sample": [0.1, 0.0]}, "seconds_per_sample[1] must be > 0, got 0.0"),
        ({"seconds_per_sample": [0.1], "download": -1}, "download must be null (no communication time) or a bandwidth in bytes/s > 0, got -1"),
    ],
)
def test_bad_speeds_name_the_key_the_value_and_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError) as error:
        PerSampleDevices(**kwargs)

    assert message in str(error.value)
