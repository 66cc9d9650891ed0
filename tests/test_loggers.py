"""Experiment loggers (conf/logger/): each real backend writes, its own reader reads back metrics.csv's values."""

from __future__ import annotations

import csv
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lightning_asyncfl.callbacks import check_loggers
from lightning_asyncfl.errors import ConfigError
from lightning_asyncfl.run import run

LOGGED = ("test_accuracy", "test_loss", "val_accuracy", "val_loss", "client_updates", "virtual_time", "wall_time")
FIGURES = ("accuracy", "staleness", "participation")  # the PNGs every run writes
CLIENT = ("client/loss", "client/loss_weighted")  # what the built-in model's training_step logs, per version


def read_client_metrics(out: Path) -> dict[int, dict[str, float]]:
    """client_training.csv by version."""
    with (out / "client_training.csv").open(newline="") as file:
        return {int(row["version"]): {k: float(v) for k, v in row.items() if k != "version"} for row in csv.DictReader(file)}


def read_metrics(out: Path) -> dict[int, dict[str, float]]:
    """metrics.csv by version."""
    with (out / "metrics.csv").open(newline="") as file:
        return {int(row["version"]): {k: float(v) for k, v in row.items() if k != "version"} for row in csv.DictReader(file)}


def read_tensorboard(logdir: Path) -> dict[str, dict[int, float]]:
    """``{tag: {step: value}}`` of the scalars in TensorBoard's event files, read with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def read_mlflow(store: Path) -> tuple[Any, dict[str, dict[int, float]]]:
    """The single run of the local MLflow store and ``{metric: {step: value}}``, read with MlflowClient."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"file:{store}")
    experiment = client.get_experiment_by_name("lightning_asyncfl")
    (found,) = client.search_runs([experiment.experiment_id])
    histories = {key: {m.step: m.value for m in client.get_metric_history(found.info.run_id, key)} for key in found.data.metrics}
    return found, histories


def read_wandb(run_dir: Path) -> list[Any]:
    """The records of W&B's offline ``run-ID.wandb`` file, parsed with wandb's own protobuf ``Record``.

    The file is LevelDB's log format behind a 7-byte ``:W&B`` header: 32 KiB blocks of
    chunks, each ``crc32 (4) | length (2) | type (1) | data``; types 1 (full) and 4 (last)
    end a record, a block's tail shorter than a chunk header is padding.
    """
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_tensorboard_logs_every_evaluation_at_its_version(make_cfg):
    cfg = make_cfg("logger=tensorboard")
    out = Path(cfg.output_dir)

    run(cfg)

    expected = read_metrics(out)
    scalars = read_tensorboard(out / "tensorboard")
    assert sorted(expected) == [0, 6, 12]
    assert set(scalars) == set(LOGGED) | set(CLIENT)  # the evaluations and the client means; no hp_metric placeholder
    for key in LOGGED:
        # TensorBoard keeps scalars as float32: the same number, rounded once
        assert scalars[key] == {v: float(np.float32(row[key])) for v, row in expected.items()}, key
    client = read_client_metrics(out)
    for key in CLIENT:
        assert scalars[key] == {v: float(np.float32(row[key])) for v, row in client.items()}, key
    assert "seed: 0" in (out / "tensorboard" / "hparams.yaml").read_text()


def test_figures_reach_tensorboard_as_images_and_mlflow_as_artifacts(make_cfg):
    from matplotlib.image import imread
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = make_cfg("logger=[tensorboard,mlflow]")
    out = Path(cfg.output_dir)

    run(cfg)

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert set(events.Tags()["images"]) == set(FIGURES)
    for tag in FIGURES:
        (image,) = events.Images(tag)
        height, width = imread(str(out / f"{tag}.png")).shape[:2]
        assert (image.step, image.height, image.width) == (12, height, width)
    found, _ = read_mlflow(out / "mlruns")
    client = MlflowClient(f"file:{out / 'mlruns'}")
    artifacts = {Path(a.path).name: a.file_size for a in client.list_artifacts(found.info.run_id, "figures")}
    assert artifacts == {f"{tag}.png": (out / f"{tag}.png").stat().st_size for tag in FIGURES}


def test_mlflow_logs_metric_history_and_config(make_cfg):
    cfg = make_cfg("logger=mlflow")
    out = Path(cfg.output_dir)

    run(cfg)

    expected = read_metrics(out)
    found, histories = read_mlflow(out / "mlruns")
    assert found.info.status == "FINISHED"
    assert set(histories) == set(LOGGED) | set(CLIENT)
    for key in LOGGED:
        assert histories[key] == {v: row[key] for v, row in expected.items()}, key  # float64: exact
    client = read_client_metrics(out)
    assert len(client) == 12
    for key in CLIENT:
        assert histories[key] == {v: row[key] for v, row in client.items()}, key
    assert found.data.params["seed"] == "0"
    assert found.data.params["server/max_steps"] == "12"


def test_wandb_offline_writes_history_and_config_into_the_run_directory(make_cfg):
    cfg = make_cfg("logger=wandb")
    out = Path(cfg.output_dir)

    run(cfg)

    expected = read_metrics(out)
    records = read_wandb(out)
    kinds = [r.WhichOneof("record_type") for r in records]
    assert kinds[-1] == "exit"  # the run was finished
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            rows.append({item.nested_key[0] if item.nested_key else item.key: float(item.value_json) for item in record.history.item})
    history = [h for h in rows if "test_accuracy" in h]
    client = read_client_metrics(out)
    assert {int(h["trainer/global_step"]): {k: h[k] for k in CLIENT} for h in rows if "client/loss" in h} == {v: {k: row[k] for k in CLIENT} for v, row in client.items()}
    assert [int(h["trainer/global_step"]) for h in history] == sorted(expected)
    for h in history:
        row = expected[int(h["trainer/global_step"])]
        assert {key: h[key] for key in LOGGED} == {key: row[key] for key in LOGGED}
    config = {item.key: item.value_json for r in records if r.WhichOneof("record_type") == "config" for item in r.config.update}
    assert config["seed"] == "0"
    assert '"max_steps":12' in config["server"].replace(" ", "")


def test_several_loggers_at_once_log_the_same_values(make_cfg):
    cfg = make_cfg("logger=[csv,tensorboard,mlflow]")
    out = Path(cfg.output_dir)

    run(cfg)

    expected = read_metrics(out)
    scalars = read_tensorboard(out / "tensorboard")
    _, histories = read_mlflow(out / "mlruns")
    accuracy = {v: row["test_accuracy"] for v, row in expected.items()}
    assert histories["test_accuracy"] == accuracy
    assert scalars["test_accuracy"] == {v: float(np.float32(a)) for v, a in accuracy.items()}


def test_default_csv_adds_no_logger_and_keeps_metrics_csv(make_cfg):
    cfg = make_cfg()
    out = Path(cfg.output_dir)

    summary = run(cfg)

    assert cfg.get("logger") in (None, {})
    assert not (out / "tensorboard").exists() and not (out / "mlruns").exists() and not (out / "wandb").exists()
    assert (out / "metrics.csv").read_text().splitlines()[0] == "version,client_updates,virtual_time,wall_time,test_loss,test_accuracy,val_loss,val_accuracy"
    assert read_metrics(out)[12]["test_accuracy"] == summary["final_accuracy"]


def test_bad_logger_config_is_reported_before_training_naming_each_key(make_cfg):
    cfg = make_cfg(
        "logger=mlflow", "+logger.mlflow.save_dri=runs",
        "+logger.nope._target_=lightning.pytorch.loggers.NoSuchLogger",
        "+logger.bar._target_=lightning_asyncfl.callbacks.ProgressBar",
        "+logger.plain=3",
    )  # fmt: skip
    out = Path(cfg.output_dir)

    with pytest.raises(ConfigError) as error:
        run(cfg)

    problems = error.value.problems
    assert len(problems) == 4, problems
    assert any(p.startswith("logger.mlflow:") and "save_dri" in p and "save_dir" in p for p in problems), problems
    assert any(p.startswith("logger.nope._target_") and "lightning.pytorch.loggers.NoSuchLogger" in p for p in problems), problems
    assert any(p.startswith("logger.bar._target_") and "ProgressBar" in p and "Logger" in p for p in problems), problems
    assert any(p.startswith("logger.plain") and "got 3" in p for p in problems), problems
    assert not out.exists()  # nothing was written, nothing trained


@pytest.mark.parametrize(("group", "module"), [("tensorboard", "tensorboard"), ("wandb", "wandb"), ("mlflow", "mlflow")])
def test_missing_backend_names_the_pip_command(make_cfg, monkeypatch, group, module):
    cfg = make_cfg(f"logger={group}")
    monkeypatch.setitem(sys.modules, module, None)  # Python's own marker of a module that cannot be imported

    with pytest.raises(ConfigError) as error:
        check_loggers(cfg.logger)

    (problem,) = error.value.problems
    assert problem.startswith(f"logger.{group}:")
    assert f'pip install "lightning-asyncfl[{group}]"' in problem
