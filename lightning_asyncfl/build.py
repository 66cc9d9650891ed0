"""build(cfg): instantiate and check every piece of an experiment before any training.

Each config group is built (and logged: ``Instantiated aggregator <...FedBuff>``), checked
to be of its base type, and set up with the one :class:`SetupContext`; every problem found
on the way (a bad value, a missing key, a wrong ``_target_``, two pieces that do not fit
together) is collected and all of them are raised together in one :class:`ConfigError`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from lightning_asyncfl import seeding
from lightning_asyncfl.aggregators import Scaffold
from lightning_asyncfl.aggregators.base import AsyncAggregator
from lightning_asyncfl.attacks import Attack
from lightning_asyncfl.availability import Availability
from lightning_asyncfl.callbacks import Callback, check_loggers
from lightning_asyncfl.checkpoint import Checkpointer
from lightning_asyncfl.client import PRECISIONS, check_client_settings, check_model
from lightning_asyncfl.client_algorithms import ClientAlgorithm
from lightning_asyncfl.client_algorithms import Scaffold as ScaffoldClient
from lightning_asyncfl.context import SetupContext
from lightning_asyncfl.delays import DelayModel
from lightning_asyncfl.errors import ConfigError, InvalidValue, InvalidValues, checking, require, require_choice
from lightning_asyncfl.executors.base import Executor
from lightning_asyncfl.faults import Faults
from lightning_asyncfl.plugins import setup_plugins
from lightning_asyncfl.preset_keys import check_target_keys
from lightning_asyncfl.privacy import DPSGD, Compressor, SecureAggregation, UploadChannel, UserLevelDP
from lightning_asyncfl.resume import writable_problem
from lightning_asyncfl.schedulers.base import Scheduler
from lightning_asyncfl.settings import SERVER_KEYS, check_loop_settings
from lightning_asyncfl.state import ModelState
from lightning_asyncfl.system import SystemModel, training_flops_per_example
from lightning_asyncfl.unused_keys import given_overrides, unused_key_warnings

log = logging.getLogger("lightning_asyncfl.run")  # the run's log lines keep their logger's name
T = TypeVar("T")


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


def make_checkpointer(checkpoint: Any, directory: Path, meta: dict[str, Any] | None = None) -> Checkpointer:
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
        problems.check("checkpoint", lambda: make_checkpointer(checkpoint, Path(".")))
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
