"""run(cfg): build every piece from the composed config, run the loop, write the results.

``__main__`` only calls :func:`run`; tests and notebooks call it directly with a config
from ``hydra.compose``. Every piece is instantiated (and checked) before any training
starts, and every problem found is reported at once in one :class:`ConfigError`.

A run is three modules: :mod:`lightning_asyncfl.resume` (the run directory, and the
checkpoint and config a ``resume`` continues from), :mod:`lightning_asyncfl.build`
(every piece instantiated and checked, all problems in one error) and this one, which
wires the pieces into the loop, runs it and writes ``summary.json`` and the final model.
The names of the first two that code imports from ``lightning_asyncfl.run`` stay here.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
import torch
from omegaconf import DictConfig

from lightning_asyncfl.build import build, make_checkpointer
from lightning_asyncfl.callbacks import Callback, ClientMetricsCSV, ClientTrainingCSV, LoggerCallback, MetricsCSV, ProgressBar, RunFigures, UpdatesCSV, build_loggers
from lightning_asyncfl.checkpoint import write_atomic
from lightning_asyncfl.client import Evaluator, TrainerSpec
from lightning_asyncfl.data.report import write_partition_report
from lightning_asyncfl.errors import ConfigError
from lightning_asyncfl.evaluation import CLIENT_COLUMNS, ClientEvaluator
from lightning_asyncfl.executors.base import resolve_config_threads
from lightning_asyncfl.loop import AsyncFLLoop
from lightning_asyncfl.resume import (
    EXACT_EXECUTORS, EXECUTOR_RESULT_KEYS, RESUME_MAY_CHANGE, UNUSABLE_RUN_DIR, _leaves, inexact_changes, load_resume, plain_config,
    resume_config, resume_run_dir, run_directory, unwritable, writable_problem,
)  # fmt: skip
from lightning_asyncfl.state import ModelState

__all__ = [  # with the names that moved to resume.py and build.py and are imported from here
    "EXACT_EXECUTORS", "EXECUTOR_RESULT_KEYS", "RESUME_MAY_CHANGE", "UNUSABLE_RUN_DIR", "Finished", "_leaves", "build", "compose",
    "execute", "inexact_changes", "resume_config", "resume_run_dir", "run", "run_title", "split_summary", "unwritable", "writable_problem",
]  # fmt: skip

log = logging.getLogger(__name__)


def _intra_op_threads(cfg: DictConfig) -> int:
    """The intra-op threads each job ran with: ``executor.num_threads``, or torch's default when null."""
    value = (cfg.get("executor") or {}).get("num_threads")
    return int(value) if isinstance(value, int) else torch.get_num_threads()


def _write_summary(out: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Write ``summary.json`` atomically (a full disk keeps the previous one whole); the last
    checkpoint's path is relative to the run directory when inside it."""
    last = summary.get("last_checkpoint")
    if last is not None and Path(last).resolve().is_relative_to(out.resolve()):
        summary = {**summary, "last_checkpoint": str(Path(last).resolve().relative_to(out.resolve()))}
    path, tmp = out / "summary.json", out / ".summary.json.tmp"
    try:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return summary


def split_summary(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The validation split's and the per-client evaluation's part of ``summary.json``, from the evaluation rows.

    ``final_val_accuracy``, ``best_val_accuracy``, ``final_val_loss`` (None without a
    validation split) and ``final_client_metrics``: the per-client summary columns of the
    last evaluation that has them, with its ``version`` ({} without per-client evaluation).
    """
    final = history[-1] if history else {}
    val = [row["val_accuracy"] for row in history if row.get("val_accuracy") is not None]
    clients = next((row for row in reversed(history) if "clients_evaluated" in row), None)
    return {
        "final_val_accuracy": final.get("val_accuracy"),
        "best_val_accuracy": max(val) if val else None,
        "final_val_loss": final.get("val_loss"),
        "final_client_metrics": {} if clients is None else {"version": clients["version"], **{k: v for k, v in clients.items() if k.startswith(CLIENT_COLUMNS)}},
    }


def run_title(cfg: DictConfig, aggregator: Any, data: Any) -> str:
    """A figure title with the run's key hyperparameters: aggregator, data, partition, clients, seed."""
    partition = repr(data.partition)
    return f"{aggregator!r} on {type(data).__name__}, {partition}, {data.num_clients} clients, seed {cfg.seed}"


class Finished(NamedTuple):
    """What :func:`execute` hands back: the summary, the evaluation rows, the final weights, the model and the run directory."""

    summary: dict[str, Any]
    history: list[dict[str, Any]]
    state_dict: dict[str, torch.Tensor]
    module: L.LightningModule
    run_dir: Path


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the experiment ``cfg`` (a composed ``conf/config.yaml``); returns the summary dict.

    What the command line and a sweep call; :func:`lightning_asyncfl.fit` is the same run
    with ready objects and a result object (see :func:`execute`).
    """
    return execute(cfg).summary


def execute(cfg: DictConfig, given: Mapping[str, Any] | None = None) -> Finished:
    """Run the experiment ``cfg`` with the ready pieces ``given`` (see :func:`build`).

    Writes into the output directory: ``partition.csv`` and ``partition.png`` (before
    training), ``metrics.csv``, ``updates.csv`` (as it goes), ``checkpoints/``,
    ``summary.json``, ``final_model.pt`` and ``accuracy.png``. With ``resume`` set it
    continues a checkpointed run in that run's directory. On Ctrl-C or an error it still
    writes ``summary.json`` (``status`` ``interrupted`` or ``failed``) before re-raising.
    """
    out = run_directory(cfg)
    problem = writable_problem("output_dir", out)
    if problem is not None:
        raise ConfigError([problem])
    cfg, resume = load_resume(cfg, out)
    cfg = resolve_config_threads(cfg)  # executor.num_threads=auto: the cores here, written into the run's config
    parts = build(cfg, given)
    out.mkdir(parents=True, exist_ok=True)
    write_partition_report(parts["data"], out)
    seed = int(cfg.seed)
    data, template = parts["data"], parts["model"]
    client = cfg.client
    eval_precision = str(cfg.eval.get("precision") or client.precision)
    evaluator = Evaluator(
        copy.deepcopy(template), data.test_dataset, batch_size=int(cfg.eval.batch_size), accelerator=client.accelerator,
        precision=eval_precision, val_dataset=data.val_dataset,
    )  # fmt: skip
    clients_every = cfg.eval.get("clients_every")
    client_evaluator = None
    if clients_every is not None:
        client_evaluator = ClientEvaluator(
            copy.deepcopy(template), data.client_test_source, data.client_test_indices, batch_size=int(cfg.eval.batch_size),
            accelerator=client.accelerator, precision=eval_precision, threshold=float(cfg.eval.get("clients_threshold", 0.5)),
        )  # fmt: skip

    make_trainer = TrainerSpec(  # picklable: process and Ray workers build their trainers from it
        module=template, train_dataset=data.train_dataset, client_indices=data.client_indices, settings=dict(client),
        algorithm=parts["algorithm"], augment=data.augment if data.has_augmentation else None, faults=parts["faults"],
    )  # fmt: skip

    logged = parts["client_metrics"]
    callbacks: list[Callback] = [MetricsCSV(out / "metrics.csv"), UpdatesCSV(out / "updates.csv", logged), ClientTrainingCSV(out / "client_training.csv", logged)]
    if client_evaluator is not None:
        callbacks.append(ClientMetricsCSV(out / "client_metrics.csv", client_evaluator))
    if cfg.get("progress", True):
        callbacks.append(ProgressBar())
    callbacks += parts["callbacks"]
    channel = parts["channel"]
    if channel.example_dp is not None:
        channel.example_dp = (channel.example_dp[0], channel.example_dp[1], list(data.num_samples))
    figures = RunFigures(
        out, title=run_title(cfg, parts["aggregator"], data),
        participation_order=str((cfg.get("figures") or {}).get("participation_order", "id")),
    )  # fmt: skip
    callbacks.append(figures)  # on_run_end: written before the loggers send them and close
    if cfg.get("logger"):  # TensorBoard, W&B, MLflow, ... (conf/logger/); their files go into the run directory
        callbacks.append(LoggerCallback(build_loggers(cfg.logger, out), hparams=plain_config(cfg), figures=lambda: figures.written))
    callbacks.append(channel)  # last (older checkpoints keep their callbacks' keys); its residuals and accountant are checkpointed
    checkpointer = None
    checkpoint = cfg.get("checkpoint") or {}
    continuation = list(resume.get("continuation", [])) if resume is not None else []  # resumes that changed the bytes
    if checkpoint.get("enabled", True):
        checkpointer = make_checkpointer(checkpoint, out / "checkpoints", meta={"config": plain_config(cfg), "continuation": continuation})
    loop = AsyncFLLoop(
        initial_state=ModelState.from_module(template).to(evaluator.device),  # the global model lives where clients train
        aggregator=parts["aggregator"],
        scheduler=parts["scheduler"],
        delay=parts["delay"],
        executor=parts["executor"],
        make_trainer=make_trainer,
        num_samples=data.num_samples,
        evaluate=lambda state: {**evaluator.evaluate(state), **channel.metrics()},  # epsilon spent, with DP
        seed=seed,
        callbacks=callbacks,
        clock=str(cfg.get("clock", "virtual")),
        attack=parts["attack"],
        availability=parts["availability"],
        checkpointer=checkpointer,
        system=parts["system"],
        time_to_accuracy=parts["time_to_accuracy"],
        evaluate_clients=client_evaluator,
        clients_every=clients_every,
        context=parts["context"],
        uplink=channel,
        **parts["loop_keys"],
    )
    log.info("Running %r with %d clients (%d training samples), output in %s", loop, loop.num_clients, sum(data.num_samples), out)
    extra = {
        "seed": seed, "num_clients": loop.num_clients, "output_dir": str(out.resolve()),
        "flops_per_example": loop.system.flops_per_example, "model_bytes": loop.global_state.nbytes,
        "intra_op_threads": _intra_op_threads(cfg),
        "continuation": {"identical": not continuation, "changed": continuation},
    }  # fmt: skip
    try:
        summary = loop.run(resume=resume)
    except BaseException:
        try:
            _write_summary(out, {**loop.summary(), **split_summary(loop.history), **extra, "privacy": channel.summary()})
        except OSError as error:  # a full disk: the error that stopped the run is the one to report
            log.error("could not write summary.json: %s", error)
        log.warning("run %s: summary.json and the last checkpoint (%s) are in %s", loop.status, loop.last_checkpoint, out.resolve())
        raise
    final_state = loop.global_state.to("cpu").state_dict()
    write_atomic(out / "final_model.pt", final_state)
    summary = _write_summary(out, {**summary, **split_summary(loop.history), **extra, "privacy": channel.summary()})
    accuracy = summary["final_accuracy"]
    log.info(
        "Done: %d versions, %d client updates, virtual time %.1f, wall %.1fs, test accuracy %s. Results in %s",
        summary["steps"], summary["client_updates"], summary["virtual_time"], summary["wall_time"],
        "n/a" if accuracy is None else f"{accuracy:.4f}", out.resolve(),
    )  # fmt: skip
    return Finished(summary, [dict(row) for row in loop.history], final_state, template, out.resolve())


def compose(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Compose the packaged ``conf/`` with Hydra overrides (for notebooks and tests)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module="lightning_asyncfl.conf", version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))
