"""Where a run writes, and what ``resume`` continues from.

The run directory (``output_dir``, the resumed run's directory, Hydra's own) and the
check that this process can write it; the OmegaConf resolvers that point ``hydra.run.dir``
at it; and resuming: which checkpoint ``resume`` names (a file, a run directory, ``auto``),
loading it (a damaged one falls back to the previous), and checking this command's config
against the checkpoint's (:func:`resume_config`: only :data:`RESUME_MAY_CHANGE` may
differ; executor settings that change the bytes need ``resume_inexact``).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lightning_asyncfl.checkpoint import checkpoints_in, load_checkpoint
from lightning_asyncfl.errors import ConfigError, InvalidValue
from lightning_asyncfl.executors.base import resolve_config_threads
from lightning_asyncfl.settings import STOP_RULES

log = logging.getLogger("lightning_asyncfl.run")  # the run's log lines keep their logger's name

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


def run_directory(cfg: DictConfig) -> Path:
    """The run's directory: the resumed run's, else ``output_dir`` (one subdirectory per job
    of a multirun), else Hydra's, else ``outputs/DATE/TIME``."""
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


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` for every leaf of a plain nested dict (lists are leaves)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


_ABSENT = object()


def _may_change(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESUME_MAY_CHANGE)


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """``cfg`` as plain resolved data without Hydra's own node: what a checkpoint stores and resume compares."""
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
    current, stored = plain_config(cfg).get("executor") or {}, saved.get("executor") or {}
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
    current_leaves, saved_leaves = _leaves(plain_config(cfg)), _leaves(saved)
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


def load_resume(cfg: DictConfig, out: Path) -> tuple[DictConfig, dict[str, Any] | None]:
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
