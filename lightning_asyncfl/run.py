"""run(cfg): build every piece from the composed config, run the loop, write the results.

``__main__`` only calls :func:`run`; tests and notebooks call it directly with a config
from ``hydra.compose``. Every piece is instantiated (and checked) before any training
starts, and every problem found is reported at once in one :class:`ConfigError`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lightning_asyncfl import seeding
from lightning_asyncfl.availability import Availability
from lightning_asyncfl.checkpoint import Checkpointer, checkpoints_in, load_checkpoint, write_atomic
from lightning_asyncfl.delays import DelayModel
from lightning_asyncfl.executors.base import Executor, resolve_config_threads
from lightning_asyncfl.aggregators.base import AsyncAggregator
from lightning_asyncfl.faults import Faults
from lightning_asyncfl.callbacks import Callback, ClientMetricsCSV, ClientTrainingCSV, LoggerCallback, MetricsCSV, ProgressBar, RunFigures, UpdatesCSV, build_loggers, check_loggers
from lightning_asyncfl.data.report import write_partition_report
from lightning_asyncfl.client import PRECISIONS, Evaluator, TrainerSpec, check_client_settings, check_model
from lightning_asyncfl.errors import ConfigError, InvalidValue, InvalidValues, checking, require, require_choice
from lightning_asyncfl.aggregators import Scaffold
from lightning_asyncfl.attacks import Attack
from lightning_asyncfl.client_algorithms import ClientAlgorithm
from lightning_asyncfl.client_algorithms import Scaffold as ScaffoldClient
from lightning_asyncfl.schedulers.base import Scheduler
from lightning_asyncfl.evaluation import CLIENT_COLUMNS, ClientEvaluator
from lightning_asyncfl.context import SetupContext
from lightning_asyncfl.loop import AsyncFLLoop
from lightning_asyncfl.plugins import setup_plugins
from lightning_asyncfl.settings import SERVER_KEYS, STOP_RULES, check_loop_settings
from lightning_asyncfl.state import ModelState
from lightning_asyncfl.unused_keys import given_overrides, unused_key_warnings
from lightning_asyncfl.preset_keys import check_target_keys
from lightning_asyncfl.privacy import DPSGD, Compressor, SecureAggregation, UploadChannel, UserLevelDP
from lightning_asyncfl.system import SystemModel, training_flops_per_example

log = logging.getLogger(__name__)
T = TypeVar("T")

#: what a resumed run may change: how it runs and when it stops, never what it computes
RESUME_MAY_CHANGE = (
    "resume", "resume_inexact", "progress", "output_dir", "checkpoint", "executor", "callbacks", "logger", "optimized_metric", "figures",
    *(f"server.{key}" for key in STOP_RULES),
)  # fmt: skip
#: executors that give the same bytes as each other (the batched one only agrees within tolerance)
EXACT_EXECUTORS = tuple(f"lightning_asyncfl.executors.{name}" for name in ("SequentialExecutor", "ThreadExecutor", "ProcessExecutor", "RayExecutor"))
#: executor keys that are part of the result on the CPU (summation order), whatever the executor
EXECUTOR_RESULT_KEYS = ("num_threads", "devices")


def resume_run_dir(resume: str | None, output_dir: str | None = None) -> Path | None:
    """The run directory a ``resume=PATH`` continues: PATH itself, the run that holds the
    checkpoint file in its ``checkpoints/``, else ``output_dir`` (None when not given)."""
    if resume in (None, "", "auto"):
        return None
    path = Path(str(resume))
    if path.is_dir():
        return path
    if path.parent.name == "checkpoints":
        return path.parent.parent
    return None if output_dir in (None, "") else Path(str(output_dir))


def unwritable(path: Path) -> str | None:
    """Why ``path`` cannot be a directory this process creates and writes into, or None.

    Nothing is created: the nearest existing directory of ``path`` (itself or a parent)
    is probed with a temporary file, so a config check writes nothing.
    """
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None:
        return "no parent directory exists"
    if not existing.is_dir():
        return f"{existing} is not a directory"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        return error.strerror or type(error).__name__
    return None


def writable_problem(key: str, path: Any) -> str | None:
    """The config problem of a directory ``key`` this process cannot create and write, or None."""
    reason = unwritable(Path(str(path)))
    return None if reason is None else f"{key} must be a directory this process can create and write, got {str(path)!r} ({reason})"


#: where Hydra's own files go when output_dir cannot be written, so that run() can report it
UNUSABLE_RUN_DIR = Path(tempfile.gettempdir()) / "lightning_asyncfl-unusable-output-dir"


def _run_dir(output_dir: Any, resume: Any, default: str) -> str:
    """``hydra.run.dir``: the resumed run's directory, else ``output_dir``, else ``default``.

    A directory that cannot be written is not handed to Hydra (which would fail with a
    traceback before the run starts): :func:`run` reports it as a config error instead.
    """
    resumed = resume_run_dir(resume, output_dir)
    chosen = str(resumed) if resumed is not None else default if output_dir in (None, "") else str(output_dir)
    return str(UNUSABLE_RUN_DIR) if unwritable(Path(chosen)) is not None else chosen


# ``hydra.run.dir`` follows ``output_dir`` when one is given, and the resumed run with resume=PATH
OmegaConf.register_new_resolver("asyncfl_or", lambda value, default: default if value in (None, "") else value, replace=True)
OmegaConf.register_new_resolver("asyncfl_run_dir", _run_dir, replace=True)
# a resumed run keeps the first session's .hydra/ (its overrides label the run) and writes its own beside it
OmegaConf.register_new_resolver("asyncfl_hydra_subdir", lambda resume: ".hydra" if resume in (None, "", "auto") else ".hydra-resume", replace=True)

class _Problems:
    """Collects config problems so that all of them are reported together."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def build(self, key: str, make: Callable[[], T]) -> T | None:
        """``make()``, or None with the problem recorded under config node ``key``."""
        result: list[T] = []
        self.check(key, lambda: result.append(make()))
        return result[0] if result else None

    def check(self, key: str, check: Callable[[], object]) -> bool:
        """Run ``check()``; False with the problem recorded under config node ``key`` if it raised."""
        try:
            check()
            return True
        except InstantiationException as error:  # a nested node's error names its own node (system.devices)
            found = re.search(r"^full_key: (\S+)$", str(error), re.MULTILINE)
            self.items.extend(_describe(found.group(1) if found else key, error.__cause__ or error))
        except (ValueError, TypeError, ImportError, OSError) as error:
            self.items.extend(_describe(key, error))
        return False

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(self.items)


def _describe(key: str, error: BaseException) -> list[str]:
    """The problem lines of ``error``, with keys placed under config node ``key``."""
    if isinstance(error, (InvalidValue, InvalidValues)):
        error = error.under(key)
        return [str(p) for p in error.problems] if isinstance(error, InvalidValues) else [str(error)]
    if isinstance(error, ConfigError):
        return list(error.problems)
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip() and not line.startswith("full_key:")]
    text = " ".join(lines) if lines else type(error).__name__
    if isinstance(error.__cause__, Exception) and str(error.__cause__) not in text:
        text += f" ({type(error.__cause__).__name__}: {error.__cause__})"
    return [f"{key}: {text}"]


def _instantiate_logged(key: str, node: DictConfig, **kwargs: Any) -> Any:
    check_target_keys(node, passed=kwargs)  # a _target_ override that kept the preset's other keys: name them all, and how to drop them
    obj = instantiate(node, **kwargs, _convert_="all")
    if isinstance(obj, torch.nn.Module):
        size = sum(p.numel() for p in obj.parameters())
        log.info("Instantiated %s <%s> with %d parameters", key, node.get("_target_"), size)
    else:
        log.info("Instantiated %s <%s>: %r", key, node.get("_target_"), obj)
    return obj


def _output_dir(cfg: DictConfig) -> Path:
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    resumed = resume_run_dir(cfg.get("resume"), cfg.get("output_dir"))
    if resumed is not None:
        return resumed
    if cfg.get("output_dir"):
        if hydra is not None and hydra.mode == RunMode.MULTIRUN:  # one directory per job, never shared
            return Path(cfg.output_dir) / str(hydra.job.num)
        return Path(cfg.output_dir)
    if hydra is not None:
        return Path(hydra.runtime.output_dir)
    return Path("outputs") / time.strftime("%Y-%m-%d/%H-%M-%S")


def _seeded(seed: int, make: Callable[[], T]) -> T:
    """``make()`` with torch's default generator seeded from the model stream, restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeding.derive_seed(seed, seeding.MODEL))
        return make()


def _of_type(problems: _Problems, key: str, obj: Any, base: type[T]) -> T | None:
    """``obj`` if it is a ``base`` (or None), else None with the problem recorded under ``key``."""
    if obj is not None and not isinstance(obj, base):
        problems.items.append(f"{key}._target_ must be a {base.__module__}.{base.__name__}, got {type(obj).__name__}")
        return None
    return obj


def _build_optional(problems: _Problems, cfg: DictConfig, key: str, base: type[T]) -> T | None:
    """The group ``key`` built and checked to be a ``base`` (``base()`` when the group is absent), or None with the problem recorded."""
    if cfg.get(key) is None:
        return base()
    return _of_type(problems, key, problems.build(key, lambda: _instantiate_logged(key, cfg[key])), base)


def _build_system(problems: _Problems, cfg: DictConfig) -> SystemModel | None:
    """The ``system`` group, its device population built first so that the problems of both are reported."""
    node = cfg.get("system")
    if node is None:
        return SystemModel()
    devices = None
    if node.get("devices") is not None:
        devices = problems.build("system.devices", lambda: instantiate(node.devices, _convert_="all"))
    return _of_type(problems, "system", problems.build("system", lambda: _instantiate_logged("system", node, devices=devices)), SystemModel)


def _build_channel(problems: _Problems, cfg: DictConfig, aggregator: Any, seed: int) -> UploadChannel:
    """The upload channel of the ``compression`` and ``privacy`` groups (lightning_asyncfl.privacy), checked against the aggregator."""
    compression = _build_optional(problems, cfg, "compression", Compressor)
    node = cfg.get("privacy") or {}
    parts: dict[str, Any] = {}
    for key, base in (("dp", UserLevelDP), ("secagg", SecureAggregation)):
        if node.get(key) is not None:
            built = problems.build(f"privacy.{key}", lambda key=key: _instantiate_logged(f"privacy.{key}", node[key]))
            parts[key] = _of_type(problems, f"privacy.{key}", built, base)
    channel = problems.build("privacy", lambda: UploadChannel(compression=compression, **parts)) or UploadChannel()
    if aggregator is not None:
        problems.check("privacy", lambda: channel.setup(SetupContext.of((), seed), aggregator))
    return channel


def _intra_op_threads(cfg: DictConfig) -> int:
    """The intra-op threads each job ran with: ``executor.num_threads``, or torch's default when null."""
    value = (cfg.get("executor") or {}).get("num_threads")
    return int(value) if isinstance(value, int) else torch.get_num_threads()


def _checkpointer(checkpoint: Any, directory: Path, meta: dict[str, Any] | None = None) -> Checkpointer:
    """The ``checkpoint`` config node's Checkpointer; ``checkpoint.dir`` wins over ``directory``."""
    return Checkpointer(
        checkpoint.get("dir") or directory, every_n_steps=checkpoint.get("every_n_steps", 100),
        keep_last=checkpoint.get("keep_last", 2), meta=meta,
    )  # fmt: skip


def _server_device(client: Any) -> torch.device:
    """Where the global model lives: the device clients train on (the evaluator's, see :func:`run`)."""
    try:
        return L.Fabric(accelerator=str(client.get("accelerator", "cpu")), devices=1).device
    except (ValueError, RuntimeError, TypeError):  # an accelerator this machine lacks: reported by the client checks
        return torch.device("cpu")


def build(cfg: DictConfig, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Instantiate and check every piece of the experiment; raise one ConfigError listing every problem.

    ``given`` holds ready pieces in place of config nodes (:func:`lightning_asyncfl.fit`):
    ``partition`` (a Partition), ``data`` (``(partition, seed) -> data module``), ``model``
    (a zero-argument factory, called under the run's model seed) and ``callbacks`` (a list).
    """
    given = given or {}
    problems = _Problems()
    valid_seed = problems.check("", lambda: require(isinstance(cfg.seed, int) and not isinstance(cfg.seed, bool) and cfg.seed >= 0, "seed", cfg.seed, "an integer >= 0"))
    seed = int(cfg.seed) if valid_seed else 0  # go on checking the rest with a usable seed
    problems.check("eval", lambda: require(isinstance(cfg.eval.batch_size, int) and cfg.eval.batch_size >= 1, "batch_size", cfg.eval.batch_size, "an integer >= 1"))
    eval_precision = cfg.eval.get("precision")
    problems.check("eval", lambda: eval_precision is None or require_choice("precision", str(eval_precision), PRECISIONS))
    val_fraction, clients_every = cfg.eval.get("val_fraction", 0.0), cfg.eval.get("clients_every")
    problems.check("eval", lambda: _check_eval_settings(cfg.eval, cfg.server.get("eval_every", 1)))
    client_ok = problems.check("client", lambda: check_client_settings(**cfg.client))
    order = (cfg.get("figures") or {}).get("participation_order", "id")
    problems.check("figures", lambda: require_choice("participation_order", order, ["id", "speed"]))
    partition = given["partition"] if "partition" in given else problems.build("partition", lambda: _instantiate_logged("partition", cfg.partition))
    data = None
    if partition is not None:
        make_data = given.get("data") or (lambda partition, seed: _instantiate_logged("data", cfg.data, partition=partition, seed=seed))
        data = problems.build("data", lambda: make_data(partition, seed))
    if data is not None and not problems.check("eval", lambda: data.hold_out_validation(val_fraction)):
        data = None
    if data is not None and not problems.check("data", lambda: data.setup("fit")):
        data = None
    if data is not None and clients_every is not None and data.client_test_indices is None:
        problems.items.append(
            f"eval.clients_every={clients_every} needs each client's own test data: set partition.client_test_fraction "
            "in (0, 1) (or use data with a natural per-client test split)"
        )
    if cfg.server.get("target_accuracy") is not None and cfg.server.get("target_metric", "test_accuracy") == "val_accuracy" and not val_fraction:
        problems.items.append(
            "server.target_metric=val_accuracy needs a validation split: set eval.val_fraction in (0, 1), "
            "or server.target_metric=test_accuracy"
        )
    model = problems.build("model", lambda: _seeded(seed, given.get("model") or (lambda: _instantiate_logged("model", cfg.model))))
    if model is not None and not isinstance(model, L.LightningModule):
        problems.items.append(f"model._target_ must be a LightningModule, got {type(model).__name__}")
        model = None
    aggregator = problems.build("server.aggregator", lambda: _instantiate_logged("aggregator", cfg.server.aggregator))
    aggregator = _of_type(problems, "server.aggregator", aggregator, AsyncAggregator)
    if cfg.server.get("scheduler") is None and isinstance(aggregator, Scheduler):  # e.g. FedAT: one object plays both
        scheduler = aggregator
    else:
        scheduler = problems.build("server.scheduler", lambda: _instantiate_logged("scheduler", cfg.server.scheduler))
        scheduler = _of_type(problems, "server.scheduler", scheduler, Scheduler)
    delay = _of_type(problems, "delay", problems.build("delay", lambda: _instantiate_logged("delay", cfg.delay)), DelayModel)
    system = _build_system(problems, cfg)
    algorithm = problems.build("client_algorithm", lambda: _instantiate_logged("client_algorithm", cfg.client_algorithm))
    if algorithm is not None and not isinstance(algorithm, ClientAlgorithm):
        problems.items.append(f"client_algorithm._target_ must be a ClientAlgorithm, got {type(algorithm).__name__}")
        algorithm = None
    if (isinstance(algorithm, ScaffoldClient) or isinstance(aggregator, Scaffold)) and not (isinstance(algorithm, ScaffoldClient) and isinstance(aggregator, Scaffold)):
        problems.items.append(
            "SCAFFOLD needs both halves: server.aggregator Scaffold and client_algorithm=scaffold "
            f"(got {type(aggregator).__name__} with {type(algorithm).__name__}); use server=scaffold"
        )
    channel = _build_channel(problems, cfg, aggregator, seed)  # compression, DP, SecAgg of uploads
    if isinstance(algorithm, DPSGD):  # privacy hook: example-level DP-SGD's accountant reads the clients' steps
        problems.check("client", lambda: require(cfg.client.get("accumulate_grad_batches", 1) == 1, "accumulate_grad_batches",
                                                 cfg.client.get("accumulate_grad_batches"), "1 with client_algorithm=dpsgd (each step is one noised batch)"))
        channel.example_dp = (algorithm, int(cfg.client.batch_size), None)
    executor = _of_type(problems, "executor", problems.build("executor", lambda: _instantiate_logged("executor", cfg.executor)), Executor)
    attack = _build_optional(problems, cfg, "attack", Attack)
    availability = _build_optional(problems, cfg, "availability", Availability)
    faults = _build_optional(problems, cfg, "faults", Faults)
    checkpoint = cfg.get("checkpoint") or {}
    if checkpoint:
        problems.check("checkpoint", lambda: require(isinstance(checkpoint.get("enabled", True), bool), "enabled", checkpoint.get("enabled"), "true or false"))
        problems.check("checkpoint", lambda: _checkpointer(checkpoint, Path(".")))
        if checkpoint.get("enabled", True) and checkpoint.get("dir"):
            problems.items.extend(p for p in [writable_problem("checkpoint.dir", checkpoint.get("dir"))] if p)
    callbacks = [
        _of_type(problems, f"callbacks.{name}", problems.build(f"callbacks.{name}", lambda node=node, name=name: _instantiate_logged(f"callbacks.{name}", node)), Callback)
        for name, node in (cfg.get("callbacks") or {}).items()
    ] + list(given.get("callbacks", ()))
    problems.check("logger", lambda: check_loggers(cfg.get("logger")))
    context = None
    if data is not None:
        layout = ModelState.from_module(model).layout if model is not None else None
        context = SetupContext.of(data.num_samples, seed, layout, _server_device(cfg.client) if client_ok else "cpu")
        plugins = {"server.aggregator": aggregator, "server.scheduler": scheduler, "delay": delay, "system": system,
                   "attack": attack, "availability": availability, "client_algorithm": algorithm}  # fmt: skip
        setup_plugins(context, plugins, check=problems.check)  # once, here: the loop is handed the context
        if system is not None:
            if model is not None and client_ok and system.charges_time and system.flops_per_example is None:
                flops = problems.build("system", lambda: training_flops_per_example(model, data.train_dataset, int(cfg.client.batch_size)))
                log.info("Counted %.4g training FLOPs per example (forward + backward of training_step)", flops or 0.0)
            else:
                flops = None
            upload_side = algorithm.upload_side_bytes if algorithm is not None else None
            problems.check("system", lambda: system.set_work(epochs=int(cfg.client.epochs), flops_per_example=flops, upload_side=upload_side,
                                                           upload_model=channel.model_upload_bytes))
    targets = cfg.eval.get("time_to_accuracy") or []
    problems.check("eval", lambda: require(
        all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 1 for t in targets),
        "time_to_accuracy", list(targets), "a list of accuracies in [0, 1]"))  # fmt: skip
    logged: list[str] = []  # what a client job logs: the client metrics' columns
    if client_ok and data is not None and model is not None and algorithm is not None:
        problems.check("model", lambda: logged.extend(check_model(
            model, data.train_dataset, data.client_indices, data.test_dataset, settings=dict(cfg.client), algorithm=algorithm, eval_batch_size=int(cfg.eval.batch_size),
        )))  # fmt: skip
    loop_keys = {k: cfg.server[k] for k in SERVER_KEYS if k in cfg.server}
    problems.check("server", lambda: check_loop_settings(**loop_keys))
    problems.check("", lambda: check_loop_settings(max_steps=1, clock=cfg.get("clock", "virtual")))
    problems.raise_if_any()
    for message in unused_key_warnings(cfg, {"server.aggregator": aggregator}, given_overrides()):
        log.warning(message)
    return {
        "data": data, "model": model, "aggregator": aggregator, "scheduler": scheduler, "delay": delay, "executor": executor,
        "attack": attack, "availability": availability, "faults": faults, "algorithm": algorithm, "callbacks": callbacks,
        "system": system, "channel": channel, "time_to_accuracy": [float(t) for t in targets], "loop_keys": loop_keys, "client_metrics": logged,
        "context": context,
    }  # fmt: skip


def _check_eval_settings(node: Any, eval_every: Any) -> None:
    """Raise for every ``eval`` key outside what is allowed (validation split, per-client evaluation)."""
    with checking() as check:
        fraction = node.get("val_fraction", 0.0)
        check(isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and 0 <= fraction < 1, "val_fraction", fraction, "in [0, 1)")
        every = node.get("clients_every")
        if every is not None:
            ok = isinstance(every, int) and not isinstance(every, bool) and every >= 1
            check(ok and isinstance(eval_every, int) and every % eval_every == 0, "clients_every", every, f"null or a positive multiple of server.eval_every ({eval_every})")
        threshold = node.get("clients_threshold", 0.5)
        check(isinstance(threshold, (int, float)) and 0 <= threshold <= 1, "clients_threshold", threshold, "in [0, 1]")


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` for every leaf of a plain nested dict (lists are leaves)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


_ABSENT = object()


def _given(key: str, given: dict[str, Any]) -> bool:
    """Whether the leaves ``given`` set ``key`` or something below it."""
    return any(k == key or k.startswith(key + ".") for k in given)


def _may_change(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESUME_MAY_CHANGE)


def _plain(cfg: DictConfig) -> dict[str, Any]:
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    return plain


def _differs(key: str, has: Any, gives: Any) -> str:
    has, gives = ("nothing" if v is _ABSENT else v for v in (has, gives))
    return f"{key}: the checkpoint's run has {has!r}, this command gives {gives!r}"


def inexact_changes(cfg: DictConfig, saved: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, checkpoint's value, this command's)`` for each executor setting that makes the
    resumed run's bytes differ from the uninterrupted run's.

    Any executor of :data:`EXACT_EXECUTORS` gives the same bytes as another, provided each
    job runs with the same intra-op threads on the same devices.
    """
    current, stored = _plain(cfg).get("executor") or {}, saved.get("executor") or {}
    changes = []
    old, new = stored.get("_target_", _ABSENT), current.get("_target_", _ABSENT)
    if old != new and not (old in EXACT_EXECUTORS and new in EXACT_EXECUTORS):
        changes.append(("executor._target_", old, new))
    for key in EXECUTOR_RESULT_KEYS:
        old, new = stored.get(key), current.get(key)  # absent: the executor has no such setting, as null
        if old != new:
            changes.append((f"executor.{key}", old, new))
    return changes


def resume_config(cfg: DictConfig, saved: dict[str, Any]) -> DictConfig:
    """The config of a resumed run: this command's ``cfg``, checked against the checkpoint's ``saved`` config.

    ``saved`` is plain data from a file and is never instantiated: every object of the
    resumed run is built from ``cfg``, the config this command composes. Outside
    :data:`RESUME_MAY_CHANGE` (how the run is executed and when it stops) every value must
    equal the checkpoint's, or a :class:`ConfigError` names each key with both values.
    Executor settings that change the bytes (:func:`inexact_changes`) are refused unless
    ``resume_inexact`` is true.
    """
    current_leaves, saved_leaves = _leaves(_plain(cfg)), _leaves(saved)
    problems = [
        _differs(key, saved_leaves.get(key, _ABSENT), current_leaves.get(key, _ABSENT))
        for key in sorted(set(current_leaves) | set(saved_leaves), key=str)
        if not _may_change(key) and saved_leaves.get(key, _ABSENT) != current_leaves.get(key, _ABSENT)
    ]
    if problems:
        problems.append(
            "a resumed run builds what this command composes and checks it against the checkpoint's config: "
            "give the run's own overrides again (its .hydra/overrides.yaml); only "
            f"{', '.join(RESUME_MAY_CHANGE)} may differ"
        )
    inexact = inexact_changes(cfg, saved)
    if inexact and not cfg.get("resume_inexact", False):
        problems += [_differs(*change) for change in inexact]
        problems.append("these change the result's bytes: resume_inexact=true continues anyway, and summary.json records the continuation as not identical")
    if problems:
        raise ConfigError(problems)
    return cfg


def _resume_candidates(cfg: DictConfig, out: Path) -> list[Path] | None:
    """The checkpoints ``resume`` may continue from, newest first (None: not resuming)."""
    resume = cfg.get("resume")
    if resume in (None, ""):
        return None
    elsewhere = (cfg.get("checkpoint") or {}).get("dir")
    if resume != "auto" and Path(str(resume)).is_file():
        if resume_run_dir(resume, cfg.get("output_dir")) is None:
            raise ConfigError([
                f"resume: {resume} is not in a run's checkpoints/ directory; give output_dir=THE RUN DIRECTORY "
                "so that the run's files are continued there"
            ])  # fmt: skip
        return [Path(str(resume))]
    places = [Path(str(elsewhere))] if resume == "auto" and elsewhere else [out if resume == "auto" else Path(str(resume))]
    if resume != "auto" and elsewhere:
        places.append(Path(str(elsewhere)))
    for place in places:
        found = checkpoints_in(place)
        if found:
            return found
    return []


def _load_resume(cfg: DictConfig, out: Path) -> tuple[DictConfig, dict[str, Any] | None]:
    """The config to run and the checkpoint state to continue from (None: a new run).

    A damaged checkpoint found in a directory (truncated, a checksum that does not match)
    is skipped with a warning for the previous one; a checkpoint file named explicitly
    must load.
    """
    candidates = _resume_candidates(cfg, out)
    if candidates is None:
        return cfg, None
    resume = cfg.get("resume")
    if not candidates:
        if resume == "auto":
            log.info("resume=auto: no checkpoint in %s, starting the run", (cfg.get("checkpoint") or {}).get("dir") or out)
            return cfg, None
        raise ConfigError([
            f"resume: no checkpoint at {resume!r}; give a checkpoint file, a run directory with checkpoints/, or auto "
            "(a run whose checkpoints are in checkpoint.dir: give checkpoint.dir too)"
        ])  # fmt: skip
    damaged: list[str] = []
    for path in candidates:
        try:
            state = load_checkpoint(path)
        except InvalidValue as error:
            damaged.append(str(error))
            continue
        if damaged:
            log.warning("%s; resuming from the previous checkpoint, %s", "; ".join(damaged), path)
        break
    else:
        raise ConfigError(damaged)
    log.info("Resuming from %s (version %d, virtual time %.3f)", path, state["version"], state["now"])
    resumed = resume_config(resolve_config_threads(cfg, saved=state["config"]), state["config"])
    changes = [f"{key}: {old} -> {new} (at version {state['version']})" for key, old, new in inexact_changes(cfg, state["config"])]
    state["continuation"] = [*state.get("continuation", []), *changes]
    return resumed, state


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
    out = _output_dir(cfg)
    problem = writable_problem("output_dir", out)
    if problem is not None:
        raise ConfigError([problem])
    cfg, resume = _load_resume(cfg, out)
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
        callbacks.append(LoggerCallback(build_loggers(cfg.logger, out), hparams=_plain(cfg), figures=lambda: figures.written))
    callbacks.append(channel)  # last (older checkpoints keep their callbacks' keys); its residuals and accountant are checkpointed
    checkpointer = None
    checkpoint = cfg.get("checkpoint") or {}
    continuation = list(resume.get("continuation", [])) if resume is not None else []  # resumes that changed the bytes
    if checkpoint.get("enabled", True):
        checkpointer = _checkpointer(checkpoint, out / "checkpoints", meta={"config": _plain(cfg), "continuation": continuation})
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
