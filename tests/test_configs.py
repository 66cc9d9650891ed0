"""Every YAML in conf/ composes and instantiates; a run writes its five files, as documented."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import DictConfig

from lightning_asyncfl.errors import ConfigError
from lightning_asyncfl.run import build, compose, run
from tests.data.vision_fixtures import WRITERS, skip_md5

CONF = Path(__file__).parents[1] / "conf"
RUN_FILES = ["partition.csv", "partition.png", "metrics.csv", "updates.csv", "summary.json", "final_model.pt", "accuracy.png"]


def _default_groups() -> set[str]:
    """Groups named in config.yaml's defaults list (others are appended with ``+group=``)."""
    defaults = yaml.safe_load((CONF / "config.yaml").read_text())["defaults"]
    groups = set()
    for entry in defaults:
        if isinstance(entry, dict):
            for key in entry:
                groups.add(key.removeprefix("override ").removeprefix("optional ").split("@")[0])
    return groups


def _discover() -> list[tuple[str, str]]:
    """(group, option) for every YAML below conf/ (config.yaml itself is the primary config)."""
    found = []
    for path in sorted(CONF.rglob("*.yaml")):
        rel = path.relative_to(CONF)
        if len(rel.parts) >= 2:
            found.append((rel.parent.as_posix(), path.stem))
    return found


OPTIONS = _discover()
DEFAULT_GROUPS = _default_groups()


def _per_client_values(cfg: DictConfig) -> list[str]:
    values = ",".join(str(float(k % 3)) for k in range(int(cfg.data.num_clients)))
    return [f"delay.values=[{values}]"]


#: options that need a value the default config does not give: (composed cfg) -> extra overrides
EXTRA: dict[str, Callable[[DictConfig], list[str]]] = {
    "delay/per_client": _per_client_values,
    "partition/natural": lambda cfg: ["data=synthetic"],  # needs a dataset with natural groups
    "client_algorithm/scaffold": lambda cfg: ["server=scaffold"],  # SCAFFOLD's two halves go together
    "system/per_sample": lambda cfg: [f"system.devices.seconds_per_sample=[{','.join('0.01' for _ in range(int(cfg.data.num_clients)))}]"],
    "privacy/secagg": lambda cfg: ["server=fedbuff"],  # a masked sum needs a buffer of several deltas
    "privacy/central_secagg": lambda cfg: ["server=fedbuff"],
}

#: options that read a trace file: the key and a small trace in FedScale's format (written as JSON)
TRACES: dict[str, tuple[str, dict]] = {
    "system/fedscale": ("system.devices.file", {"1": {"computation": 10.0, "communication": 500.0}}),
    "availability/fedscale": ("availability.file", {"1": {"active": [0.0], "inactive": [50.0], "finish_time": 100.0}}),
}


def _file_data(group: str, option: str, root: Path) -> list[str]:
    """Overrides that point the LEAF, Hugging Face and sequence-model options at tiny files written into ``root``."""
    from tests.data.leaf_fixtures import write_femnist, write_shakespeare

    if (group, option) == ("data", "femnist"):
        write_femnist(root, [(4, 1), (5, 1), (3, 1)])
        return [f"data.root={root}", "server.scheduler.concurrency=2"]
    if (group, option) == ("data", "shakespeare") or (group == "model" and option in ("char_lstm", "transformer")):
        write_shakespeare(root, [(4, 1), (5, 1), (3, 1)])
        return ["data=shakespeare", f"data.root={root}", "server.scheduler.concurrency=2"]
    if (group, option) == ("data", "hf"):
        import datasets

        rows = {"image": torch.randint(0, 256, (40, 28, 28)).tolist(), "label": [k % 10 for k in range(40)]}
        datasets.Dataset.from_dict(rows).save_to_disk(str(root / "hf"))
        return [f"data.path={root / 'hf'}", "data.test_split=null", "data.num_clients=4", "partition=iid", "server.scheduler.concurrency=2"]
    if (group, option) == ("data", "tensors"):
        g = torch.Generator().manual_seed(0)
        torch.save({"x": torch.rand(60, 1, 8, 8, generator=g), "y": torch.arange(60) % 10, "x_test": torch.rand(20, 1, 8, 8, generator=g), "y_test": torch.arange(20) % 10}, root / "data.pt")
        return [f"data.file={root / 'data.pt'}", "data.input_shape=[1,8,8]", "data.num_classes=10", "data.num_clients=4", "partition=iid", "server.scheduler.concurrency=2"]
    if (group, option) == ("partition", "given"):
        (root / "lists.json").write_text(json.dumps([list(range(k, 400, 20)) for k in range(20)]))
        return [f"partition.file={root / 'lists.json'}"]
    return []


def _select(group: str, option: str) -> str:
    prefix = "" if group in DEFAULT_GROUPS else "+"
    return f"{prefix}{group}={option}"


def test_discovery_finds_every_documented_option():
    # Prepare
    expected = {
        ("server", "fedasync"), ("server", "fedbuff"), ("server", "fedavg"),
        ("data", "digits"), ("data", "synthetic"),
        ("partition", "iid"), ("partition", "dirichlet"), ("partition", "shards"),
        ("delay", "none"), ("delay", "constant"), ("delay", "uniform"), ("delay", "exponential"),
        ("delay", "lognormal"), ("delay", "per_client"), ("delay", "stepped"),
        ("model", "mlp"), ("model", "cnn"),
        ("executor", "sequential"),
    }  # fmt: skip

    # Execute
    found = set(OPTIONS)

    # Assert
    assert expected <= found, f"missing: {sorted(expected - found)}"
    assert {"server", "data", "partition", "delay", "model", "executor"} <= DEFAULT_GROUPS


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_config_option_composes_and_instantiates(group, option, tmp_path, tmp_path_factory, monkeypatch):
    # Prepare
    base = [_select(group, option), "progress=false", f"output_dir={tmp_path}"]
    if group == "data" and option in WRITERS:  # image datasets: tiny real-format files, no download
        root = tmp_path_factory.mktemp("datasets")
        WRITERS[option](root)
        skip_md5(monkeypatch)
        base += [f"data.root={root}", "data.num_clients=10", "partition=iid"]
    base += _file_data(group, option, tmp_path_factory.mktemp("files"))
    if f"{group}/{option}" in TRACES:
        key, trace = TRACES[f"{group}/{option}"]
        file = tmp_path_factory.mktemp("traces") / "trace.json"
        file.write_text(json.dumps(trace))
        base.append(f"{key}={file}")
    extra = EXTRA.get(f"{group}/{option}")
    cfg = compose(base)
    if extra is not None:
        cfg = compose(base + extra(cfg))

    # Execute
    parts = build(cfg)

    # Assert: every piece was built, and the selected option's class is the one built
    for key in ("data", "model", "aggregator", "scheduler", "delay", "executor"):
        assert parts[key] is not None, key
    built = {
        "server": (parts["aggregator"], cfg.server.aggregator),
        "data": (parts["data"], cfg.data),
        "partition": (parts["data"].partition, cfg.partition),
        "delay": (parts["delay"], cfg.delay),
        "model": (parts["model"], cfg.model),
        "executor": (parts["executor"], cfg.executor),
        "client_algorithm": (parts["algorithm"], cfg.client_algorithm),
        "system": (parts["system"], cfg.system),
        "availability": (parts["availability"], cfg.availability),
    }.get(group)
    if built is not None:
        obj, node = built
        assert type(obj).__name__ == node._target_.rsplit(".", 1)[1]
    assert not any(tmp_path.iterdir()), "build() must not write anything"


def test_per_client_delay_without_values_or_file_names_delay_values(tmp_path):
    # Prepare
    cfg = compose(["delay=per_client", "progress=false", f"output_dir={tmp_path}"])

    # Execute
    with pytest.raises(ConfigError) as info:
        build(cfg)

    # Assert
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("delay.values ")
    assert "file" in info.value.problems[0]


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


@pytest.mark.parametrize("override", ["server=fedbuff", "server=fedavg", "data=synthetic", "delay=exponential", "partition=iid"])
def test_preset_runs_and_writes_its_five_files(override, make_cfg):
    # Prepare
    cfg = make_cfg(override)
    out = Path(cfg.output_dir)

    # Execute
    summary = run(cfg)

    # Assert
    for name in RUN_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    written = json.loads((out / "summary.json").read_text())
    assert written == summary
    assert written["steps"] == cfg.server.max_steps == 12
    assert written["stop_reason"] == "max_steps"
    assert written["output_dir"] == str(out.resolve())
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_csv_has_one_row_per_evaluation_including_version_0_and_the_end(make_cfg):
    # Prepare: 10 versions, evaluation every 4: versions 0, 4, 8 and the end (10)
    cfg = make_cfg("server.max_steps=10", "server.eval_every=4")

    # Execute
    summary = run(cfg)

    # Assert
    header, rows = _read_csv(Path(cfg.output_dir) / "metrics.csv")
    assert header[:4] == ["version", "client_updates", "virtual_time", "wall_time"]
    assert set(header[4:]) == {"test_loss", "test_accuracy", "val_loss", "val_accuracy"}  # the validation split is on by default
    assert [int(row["version"]) for row in rows] == [0, 4, 8, 10]
    assert int(rows[0]["client_updates"]) == 0 and float(rows[0]["virtual_time"]) == 0.0
    last = rows[-1]
    assert float(last["test_accuracy"]) == summary["final_accuracy"]
    assert float(last["test_loss"]) == summary["final_loss"]
    assert int(last["client_updates"]) == summary["client_updates"]
    assert float(last["virtual_time"]) == summary["virtual_time"]
    times = [float(row["virtual_time"]) for row in rows]
    assert times == sorted(times)


def test_updates_csv_has_one_row_per_arrived_job_and_counts_the_accepted(make_cfg):
    # Prepare: ten clients in flight and max_staleness=1, so some updates are dropped as stale
    cfg = make_cfg("server.max_staleness=1")

    # Execute
    summary = run(cfg)

    # Assert
    _, rows = _read_csv(Path(cfg.output_dir) / "updates.csv")
    statuses = [row["status"] for row in rows]
    assert len(rows) == summary["client_updates"]
    assert len({row["job_id"] for row in rows}) == len(rows)
    assert statuses.count("accepted") == summary["accepted"] == summary["applied"] == 12
    assert statuses.count("stale") == summary["rejected"].get("stale", 0) > 0
    assert all(int(row["staleness"]) > 1 for row in rows if row["status"] == "stale")
    arrivals = [float(row["arrival_time"]) for row in rows]
    assert arrivals == sorted(arrivals)


def test_final_model_loads_with_weights_only_and_has_the_mlp_keys(make_cfg):
    # Prepare
    cfg = make_cfg()
    model = build(cfg)["model"]

    # Execute
    run(cfg)
    state = torch.load(Path(cfg.output_dir) / "final_model.pt", weights_only=True)

    # Assert
    expected = {k: v.clone() for k, v in model.state_dict().items()}  # the initial weights
    assert set(state) == set(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in expected.items()}
    assert any(not torch.equal(state[k], expected[k]) for k in expected), "the saved model must be the trained one"
    model.load_state_dict(state, strict=True)
