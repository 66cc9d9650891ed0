"""LoggerCallback: every evaluation of the global model, sent to Lightning's experiment loggers.

The ``logger`` config group names the loggers (``logger=[tensorboard,mlflow]``); each is a
node ``{_target_: lightning.pytorch.loggers.TensorBoardLogger, ...}`` under ``logger.NAME``,
built by :func:`build_loggers` and driven by :class:`LoggerCallback`:

- at the start, the resolved config as hyperparameters;
- at each evaluation, the row of ``metrics.csv`` (``test_*``, ``client_updates``,
  ``virtual_time``, ``wall_time``) with ``step`` = the global version;
- at each aggregation, what the applied updates' jobs logged (``client/NAME`` and
  ``client/NAME_weighted``, see :mod:`lightning_asyncfl.callbacks.client_training`) at
  ``step`` = the new version;
- at the end, the run's figures (TensorBoard images, MLflow artifacts;
  :meth:`LoggerCallback.log_figures`), then ``finalize("success")`` and the run closed.

A relative ``save_dir`` is inside the run directory, so every logger's files sit next to
``metrics.csv``. The backends are optional extras (``pip install "lightning-asyncfl[tensorboard]"``);
:func:`check_loggers` reports a missing one, with the command that installs it, before any
training starts.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from lightning.fabric.loggers import Logger

from lightning_asyncfl.callbacks.base import Callback
from lightning_asyncfl.callbacks.client_training import client_means
from lightning_asyncfl.errors import ConfigError

log = logging.getLogger(__name__)

#: Lightning's logger class -> (module it needs, this project's extra that installs it, environment it needs)
BACKENDS: dict[str, tuple[str, str, dict[str, str]]] = {
    "TensorBoardLogger": ("tensorboard", "tensorboard", {}),
    "WandbLogger": ("wandb", "wandb", {}),
    # MLflow >= 3.x refuses a file: tracking store (save_dir) unless this opt-in is set
    "MLFlowLogger": ("mlflow", "mlflow", {"MLFLOW_ALLOW_FILE_STORE": "true"}),
}


def _import(path: str) -> Any:
    """The object at dotted ``path`` (``package.module.Name``)."""
    module, _, name = path.rpartition(".")
    if not module:
        raise ImportError(f"{path!r} is not a dotted path package.module.Name")
    return getattr(importlib.import_module(module), name)


def _entries(node: Any) -> dict[str, Any]:
    """``{name: node}`` of the logger config, None entries (switched off) left out."""
    if node is None:
        return {}
    if not isinstance(node, Mapping):
        raise ConfigError([f"logger must be a mapping of name: {{_target_: a Lightning logger, ...}}, got {node!r}"])
    return {str(name): entry for name, entry in node.items() if entry is not None}


def _problems(name: str, entry: Any) -> list[str]:
    key = f"logger.{name}"
    if not isinstance(entry, Mapping) or not isinstance(entry.get("_target_"), str):
        return [f"{key} must be a mapping with _target_: a Lightning logger class, e.g. lightning.pytorch.loggers.TensorBoardLogger, got {entry!r}"]
    target = entry["_target_"]
    try:
        cls = _import(target)
    except (ImportError, AttributeError) as error:
        return [f"{key}._target_ must be an importable Lightning logger class, got {target!r} ({type(error).__name__}: {error})"]
    if not isinstance(cls, type) or not issubclass(cls, Logger):
        return [f"{key}._target_ must be a Lightning logger (a subclass of lightning.fabric.loggers.Logger), got {target!r}"]
    backend = next((BACKENDS[c.__name__] for c in cls.__mro__ if c.__name__ in BACKENDS), None)
    if backend is not None and importlib.util.find_spec(backend[0]) is None:
        module, extra, _ = backend
        return [f"{key}: {cls.__name__} needs the {module} package, which is not installed: pip install \"lightning-asyncfl[{extra}]\""]
    kwargs = {k: v for k, v in entry.items() if not str(k).startswith("_")}
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as error:
        names = [p.name for p in inspect.signature(cls).parameters.values() if p.kind is not p.VAR_KEYWORD]
        return [f"{key}: {error} for {cls.__name__}; its arguments are: {', '.join(names)}"]
    return []


def check_loggers(node: Any) -> None:
    """Check the ``logger`` config node without building anything.

    Raises:
        ConfigError: every problem, each naming its key (``logger.NAME``): not a mapping,
            a ``_target_`` that does not import or is not a Lightning logger, a backend that
            is not installed (with the ``pip install`` command), an unknown argument.
    """
    problems = [p for name, entry in _entries(node).items() for p in _problems(name, entry)]
    if problems:
        raise ConfigError(problems)


def build_loggers(node: Any, run_dir: str | Path) -> dict[str, Logger]:
    """Instantiate the loggers of the ``logger`` config node; a relative ``save_dir`` is placed in ``run_dir``.

    Raises:
        ConfigError: see :func:`check_loggers`, or a logger whose constructor raised.
    """
    check_loggers(node)
    loggers: dict[str, Logger] = {}
    for name, entry in _entries(node).items():
        cls = _import(entry["_target_"])
        for var, value in next((BACKENDS[c.__name__][2] for c in cls.__mro__ if c.__name__ in BACKENDS), {}).items():
            os.environ.setdefault(var, value)
        kwargs: dict[str, Any] = {}
        save_dir = entry.get("save_dir")
        if save_dir is not None and not Path(str(save_dir)).is_absolute():
            kwargs["save_dir"] = str(Path(run_dir).resolve() / str(save_dir))
        try:
            loggers[name] = instantiate(entry, **kwargs, _convert_="all")
        except Exception as error:
            cause = error.__cause__ or error
            raise ConfigError([f"logger.{name}: {type(cause).__name__}: {' '.join(str(cause).split())}"]) from error
        log.info("Instantiated logger.%s <%s>, files in %s", name, entry["_target_"], kwargs.get("save_dir", save_dir))
    return loggers


class LoggerCallback(Callback):
    """Logs the run to Lightning loggers: config at the start, each evaluation at ``step=version``.

    Args:
        loggers: the loggers, by name (from :func:`build_loggers`).
        hparams: the resolved config, logged as hyperparameters at the start.
        figures: called at the end for the run's figures ``{file name: path}`` (e.g. a
            :class:`~lightning_asyncfl.callbacks.plots.RunFigures`' ``written``), sent
            before the loggers close; None: none.
    """

    def __init__(self, loggers: Mapping[str, Logger], *, hparams: Mapping[str, Any] | None = None, figures: Callable[[], Mapping[str, Path]] | None = None) -> None:
        self.loggers = dict(loggers)
        self.hparams = dict(hparams or {})
        self.figures = figures

    def __repr__(self) -> str:
        return f"LoggerCallback({', '.join(f'{n}={type(lg).__name__}' for n, lg in self.loggers.items())})"

    def on_run_start(self, loop: Any) -> None:
        """Log the config as hyperparameters."""
        for logger in self.loggers.values():
            logger.log_hyperparams(self.hparams)

    def on_aggregate(self, loop: Any, updates: Any, version: int) -> None:
        """Log the means of what the applied updates' jobs logged (``client/...``) at ``step=version``."""
        means = client_means(updates)
        if means:
            for logger in self.loggers.values():
                logger.log_metrics(means, step=version)

    def on_evaluate(self, loop: Any, version: int, metrics: dict[str, float]) -> None:
        """Log the evaluation's row of ``metrics.csv`` at ``step=version``, and write it to disk."""
        row = {k: v for k, v in loop.last_metrics.items() if k != "version"}
        for logger in self.loggers.values():
            logger.log_metrics(row, step=version)
            logger.save()

    def on_run_end(self, loop: Any, summary: dict[str, Any]) -> None:
        """Send the run's figures (see :meth:`log_figures`), then finalize every logger and close its run (W&B's ``finish``)."""
        figures = self.figures() if self.figures is not None else {}
        for logger in self.loggers.values():
            self.log_figures(logger, figures, step=loop.version)
            logger.save()
            logger.finalize("success")
            finish = getattr(logger.experiment, "finish", None)  # a wandb Run stays open until finished
            if callable(finish):
                finish()
                _wandb_flush()


    @staticmethod
    def log_figures(logger: Logger, figures: Mapping[str, str | Path], step: int = 0) -> None:
        """Send PNG figures to ``logger`` in the form its backend keeps pictures.

        TensorBoard: an image per figure (tag = file name without ``.png``) at ``step``;
        MLflow: an artifact under ``figures/``. Other loggers get none (the PNGs are in
        the run directory).
        """
        kind = {c.__name__ for c in type(logger).__mro__}
        for name, path in figures.items():
            if "TensorBoardLogger" in kind:
                import matplotlib.image

                image = matplotlib.image.imread(str(path))  # float RGBA in [0, 1]
                logger.experiment.add_image(Path(name).stem, image[..., :3], global_step=step, dataformats="HWC")
            elif "MLFlowLogger" in kind:
                logger.experiment.log_artifact(logger.run_id, str(path), artifact_path="figures")


def _wandb_flush() -> None:
    """Wait until W&B's service has written every record of the finished runs (``finish`` returns before).

    Only when no W&B run is open in this process any more: ``wandb.teardown`` waits for the
    service and stops it (the next run starts a new one).
    """
    import wandb

    if wandb.run is None:
        wandb.teardown()
