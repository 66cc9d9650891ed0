"""The Python API for notebooks and sweeps: ready objects in and a result out, one experiment from overrides, and a sweep's objective.

``fit(overrides, data=..., model=..., partition=..., callbacks=...)`` runs an experiment
with objects already in memory (tensors, index lists, a LightningModule defined in a
notebook) in place of their config nodes and returns a :class:`Result`: the summary, the
metrics history, the updates, the final model as a LightningModule and as a state dict,
and the run directory. It is a new name rather than new arguments of ``run(cfg)``, which
keeps returning the summary dict that the command line, sweeps (``optimized_metric``) and
existing scripts read.

``experiment(["server=fedbuff", "data.num_clients=50"])`` is what
``python -m lightning_asyncfl server=fedbuff data.num_clients=50`` does, from Python:
the packaged ``conf/`` composed with the overrides, run, and the summary dict returned.
:func:`objective` is what the Hydra entry point returns to a sweeper (Optuna): the
summary's value named by the config key ``optimized_metric``.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning import LightningModule
from omegaconf import DictConfig, open_dict
from torch import Tensor

from lightning_asyncfl.callbacks import Callback
from lightning_asyncfl.data.datamodule import FederatedDataModule
from lightning_asyncfl.data.given import Given
from lightning_asyncfl.data.partition import Partition
from lightning_asyncfl.errors import ConfigError, InvalidValue
from lightning_asyncfl.run import compose, execute, run

log = logging.getLogger(__name__)

#: keys of ``summary.json`` whose value is a number, the ones ``optimized_metric`` may name
METRICS = (
    "final_accuracy", "best_accuracy", "final_loss", "steps", "client_updates", "dispatched", "accepted",
    "applied", "failed", "retries", "dropped", "attacked", "rejected_total", "in_flight", "buffered",
    "virtual_time", "wall_time", "executor_start_time", "peak_snapshots", "seed", "num_clients",
    "bytes_down", "bytes_up", "mean_compute_time", "mean_communication_time", "flops_per_example", "model_bytes",
    "final_val_accuracy", "best_val_accuracy", "final_val_loss", "intra_op_threads",
)  # fmt: skip


def experiment(overrides: Sequence[str] | None = None, *, config_name: str = "config") -> dict[str, Any]:
    """Compose the packaged ``conf/`` with Hydra ``overrides``, run it and return the summary dict.

    Equivalent to ``run(compose(overrides))``; the results go where the command line's would
    (``output_dir``, else ``outputs/DATE/TIME`` below the working directory).

    Args:
        overrides: Hydra overrides, as on the command line (``["server=fedbuff", "seed=1"]``).
        config_name: the primary config of ``conf/``.

    Returns:
        The summary dict that ``summary.json`` holds.

    Raises:
        ConfigError: the composed config is invalid (every problem listed), before any training.
    """
    if isinstance(overrides, str):  # a common slip: experiment("server=fedbuff") would iterate its characters
        raise TypeError(f"overrides must be a list of strings, got the string {overrides!r}; write [{overrides!r}]")
    return run(compose(list(overrides or []), config_name=config_name))


def check_optimized_metric(cfg: DictConfig) -> str:
    """The ``optimized_metric`` of ``cfg``; a :class:`ConfigError` naming the allowed keys if it is not one."""
    name = cfg.get("optimized_metric", "final_val_accuracy")
    if name not in METRICS:
        raise ConfigError([str(InvalidValue("optimized_metric", name, f"one of: {', '.join(METRICS)}"))])
    return str(name)


def objective(cfg: DictConfig, summary: Mapping[str, Any]) -> float | None:
    """The value of ``summary`` a sweeper optimises: ``summary[cfg.optimized_metric]`` (None stays None)."""
    value = summary[check_optimized_metric(cfg)]
    return None if value is None else float(value)


# ----------------------------------------------------------------------------------------
# fit(): ready objects in, a result object out


@dataclass(frozen=True)
class Result:
    """What :func:`fit` hands back.

    Attributes:
        summary: the summary dict (what ``summary.json`` holds).
        history: one dict per evaluation of the global model (the rows of ``metrics.csv``,
            with their Python types: version, client updates, virtual time, test and val metrics).
        state_dict: the final global model's ``state_dict`` (CPU tensors; the bytes of ``final_model.pt``).
        model: the final global model as a LightningModule (a copy of the run's model with
            ``state_dict`` loaded).
        run_dir: the run directory, holding every file the command line writes.
        config: the config the run ran with (given objects appear as ``_given_`` nodes).
    """

    summary: dict[str, Any]
    history: list[dict[str, Any]]
    state_dict: dict[str, Tensor]
    model: LightningModule
    run_dir: Path
    config: DictConfig

    @property
    def updates(self) -> list[dict[str, Any]]:
        """One dict per arrived job (the rows of ``updates.csv``: client, staleness, times, status), numbers parsed."""
        return read_csv_rows(self.run_dir / "updates.csv", text_columns=("status", "detail"))

    def to_pandas(self, table: str = "metrics") -> Any:
        """``history`` (``table="metrics"``) or ``updates`` (``table="updates"``) as a pandas DataFrame.

        Raises:
            ImportError: pandas is not installed (``pip install pandas``).
            ValueError: ``table`` is neither.
        """
        if table not in ("metrics", "updates"):
            raise ValueError(f"table must be one of: metrics, updates, got {table!r}")
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Result.to_pandas() needs pandas: pip install pandas (Result.history and Result.updates are plain lists of dicts)") from None
        return pd.DataFrame(self.history if table == "metrics" else self.updates)


def read_csv_rows(path: Path, text_columns: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The rows of a CSV file the run wrote, numbers parsed (an empty cell is None); [] when there is no file."""
    import csv

    def parse(column: str, text: str) -> Any:
        if text == "":
            return None
        if column in text_columns:
            return text
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text

    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [{k: parse(k, v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _qualname(obj: Any) -> str:
    kind = obj if isinstance(obj, type) or inspect.isroutine(obj) else type(obj)
    return f"{getattr(kind, '__module__', '?')}.{getattr(kind, '__qualname__', type(kind).__name__)}"


def _sha256(tensors: Sequence[Tensor]) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        digest.update(f"{t.dtype}{list(t.shape)}".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _as_partition(partition: Any) -> Partition:
    """A Partition object, given index lists (``[[0, 5], [1, 2]]``), or a file of them (a path)."""
    if isinstance(partition, Partition):
        return partition
    if isinstance(partition, (str, Path)):
        return Given(file=str(partition))
    try:
        return Given(index_lists=partition)
    except InvalidValue as error:
        raise ConfigError([str(error.under("partition"))]) from None


def _model_factory(model: Any) -> tuple[Callable[[], LightningModule], dict[str, Any]]:
    """A zero-argument factory of the run's model and its description for the recorded config."""
    if isinstance(model, torch.nn.Module):
        if not isinstance(model, LightningModule):
            raise ConfigError([f"model must be a LightningModule (or a class or function making one), got {type(model).__name__}"])
        snapshot = copy.deepcopy(model)  # the user's object stays as it is; its weights are the initial global model
        return (lambda: copy.deepcopy(snapshot)), {"_given_": _qualname(model), "weights_sha256": _sha256(list(model.state_dict().values()))}
    if callable(model):  # a class or factory: built under the run's model seed, as a _target_ is
        return model, {"_given_": _qualname(model)}
    raise ConfigError([f"model must be a LightningModule, or a class or function that makes one, got {type(model).__name__}"])


def _data_factory(data: Any) -> tuple[Callable[[Partition, int], FederatedDataModule], dict[str, Any]]:
    """``(partition, seed) -> data module`` (a copy of ``data`` bound to the run's partition and seed) and its description."""
    if not isinstance(data, FederatedDataModule):
        raise ConfigError([
            f"data must be a lightning_asyncfl.data.FederatedDataModule (e.g. TensorFederatedData(x, y, x_test, y_test)), got {type(data).__name__}"
        ])  # fmt: skip

    def make(partition: Partition, seed: int) -> FederatedDataModule:
        module = copy.copy(data)
        module.partition, module.seed = partition, int(seed)
        module.train_dataset = None  # set up afresh, with this run's partition and seed
        log.info("Using the given data %r", module)
        return module

    fingerprint = data.fingerprint() if callable(getattr(data, "fingerprint", None)) else None
    described = {
        "_given_": _qualname(data), "num_clients": data.num_clients, "input_shape": list(data.input_shape),
        "num_classes": data.num_classes, "sha256": fingerprint,
    }  # fmt: skip
    return make, described


def _partition_description(partition: Partition) -> dict[str, Any]:
    lists = getattr(partition, "index_lists", None)
    digest = None if lists is None else _sha256([torch.from_numpy(np.asarray(part, dtype=np.int64)) for part in lists])
    return {"_given_": _qualname(partition), "repr": repr(partition), "sha256": digest}


def fit(
    config: DictConfig | Sequence[str] | None = None,
    *,
    data: FederatedDataModule | None = None,
    model: LightningModule | Callable[[], LightningModule] | None = None,
    partition: Partition | Sequence[Any] | str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    output_dir: str | Path | None = None,
) -> Result:
    """Run one experiment with ready objects alongside the config; return a :class:`Result`.

    Each object given takes the place of its config node; everything else comes from
    ``config``. The run is the one the command line makes from the same config and the
    same objects as ``_target_`` classes: the same seed streams and bytes, the same run
    directory files, and ``resume`` continues it (give the same objects again: the
    recorded config holds their fingerprints and a different one is refused).

    Args:
        config: a composed config (:func:`lightning_asyncfl.compose`), or Hydra overrides
            for the packaged ``conf/`` (``["server=fedbuff", "seed=1"]``); None: the defaults.
        data: a data module, e.g. ``TensorFederatedData(x, y, x_test, y_test)``; the run
            gives a copy of it the run's partition and seed. Replaces ``data``.
        model: a LightningModule, whose current weights are the initial global model, or a
            class or zero-argument function making one, called under the run's model seed
            (the same initial weights as the command line's ``model._target_``). Replaces ``model``.
        partition: a Partition, one index list per client (``[[0, 5, 9], [1, 2], ...]``),
            or a file of them (see :class:`~lightning_asyncfl.data.Given`). Replaces ``partition``.
        callbacks: callbacks run besides the config's ``callbacks``.
        output_dir: the run directory (default: ``config``'s ``output_dir``, else ``outputs/DATE/TIME``).

    Returns:
        The summary, the metrics history, the final model (a LightningModule and a state
        dict), the updates and the run directory.

    Raises:
        ConfigError: the config or a given object is invalid (every problem listed), before any training.
    """
    if isinstance(config, str):
        raise TypeError(f"config must be a composed config or a list of overrides, got the string {config!r}; write [{config!r}]")
    cfg = copy.deepcopy(config) if isinstance(config, DictConfig) else compose(list(config or []))
    given: dict[str, Any] = {}
    described: dict[str, Any] = {}
    if output_dir is not None:
        described["output_dir"] = str(output_dir)
    if partition is not None:
        given["partition"] = _as_partition(partition)
        described["partition"] = _partition_description(given["partition"])
    if data is not None:
        given["data"], described["data"] = _data_factory(data)
        if described["data"]["num_clients"] is None and "partition" in given:
            described["data"]["num_clients"] = getattr(given["partition"], "num_clients", None)
    if model is not None:
        given["model"], described["model"] = _model_factory(model)
    bad = [type(c).__name__ for c in callbacks if not isinstance(c, Callback)]
    if bad:
        raise ConfigError([f"callbacks must be lightning_asyncfl.Callback objects, got {', '.join(bad)}"])
    given["callbacks"] = list(callbacks)
    with open_dict(cfg):
        for key, node in described.items():
            cfg[key] = node
    finished = execute(cfg, given)
    final = copy.deepcopy(finished.module)
    final.load_state_dict(finished.state_dict)
    return Result(finished.summary, finished.history, finished.state_dict, final, finished.run_dir, cfg)
