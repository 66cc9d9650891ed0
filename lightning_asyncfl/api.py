"""The Python API for notebooks and sweeps: one experiment from overrides, and a sweep's objective.

``experiment(["server=fedbuff", "data.num_clients=50"])`` is what
``python -m lightning_asyncfl server=fedbuff data.num_clients=50`` does, from Python:
the packaged ``conf/`` composed with the overrides, run, and the summary dict returned.
:func:`objective` is what the Hydra entry point returns to a sweeper (Optuna): the
summary's value named by the config key ``optimized_metric``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig

from lightning_asyncfl.errors import ConfigError, InvalidValue
from lightning_asyncfl.run import compose, run

#: keys of ``summary.json`` whose value is a number, the ones ``optimized_metric`` may name
METRICS = (
    "final_accuracy", "best_accuracy", "final_loss", "steps", "client_updates", "dispatched", "accepted",
    "applied", "failed", "retries", "dropped", "attacked", "rejected_total", "in_flight", "buffered",
    "virtual_time", "wall_time", "executor_start_time", "peak_snapshots", "seed", "num_clients",
    "bytes_down", "bytes_up", "mean_compute_time", "mean_communication_time", "flops_per_example", "model_bytes",
    "final_val_accuracy", "best_val_accuracy", "final_val_loss",
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
