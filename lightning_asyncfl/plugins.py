"""The one place where every plug-in of a run is set up: ``setup(context)``, once, before training.

A run's owner (:func:`lightning_asyncfl.build.build` for a config, else
:class:`~lightning_asyncfl.loop.AsyncFLLoop` itself) builds one
:class:`~lightning_asyncfl.context.SetupContext` and calls :func:`setup_plugins` with
every plug-in: aggregator, scheduler, delay model, system model, attack, availability and
client algorithm. Every plug-in's problem is collected, so a bad attack and a bad
scheduler are reported together in one error.

Plug-ins written before ``setup(context)`` existed keep working: a ``setup`` whose first
argument is not named ``context`` is called the old way for its kind (a scheduler's
``setup(num_clients)``, a delay model's ``setup(num_samples, rng)``, an attack's or an
availability's ``setup(num_clients, rng)``), with a :class:`DeprecationWarning`.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from lightning_asyncfl import seeding
from lightning_asyncfl.context import SetupContext
from lightning_asyncfl.errors import ConfigError, InvalidValue, InvalidValues

#: the order plug-ins are set up in (each draws from its own stream, so the order never changes a draw)
ORDER = ("system", "delay", "attack", "availability", "server.aggregator", "server.scheduler", "client_algorithm")


def _takes_context(plugin: Any) -> bool:
    """Whether ``plugin.setup``'s first argument is ``context`` (the current interface)."""
    params = list(inspect.signature(plugin.setup).parameters.values())
    return bool(params) and params[0].name == "context"


def _legacy_call(plugin: Any, context: SetupContext) -> None:
    """``plugin.setup`` with the arguments of its kind's old interface."""
    from lightning_asyncfl.attacks import Attack
    from lightning_asyncfl.availability import Availability
    from lightning_asyncfl.delays import DelayModel
    from lightning_asyncfl.system import SystemModel

    if isinstance(plugin, DelayModel):
        plugin.setup(context.num_samples, context.stream(seeding.DELAY))
    elif isinstance(plugin, SystemModel):
        plugin.setup(context.num_samples, context.stream(seeding.DEVICES))
    elif isinstance(plugin, Attack):
        plugin.setup(context.num_clients, context.stream(seeding.ATTACK))
    elif isinstance(plugin, Availability):
        plugin.setup(context.num_clients, context.stream(seeding.AVAILABILITY))
    else:  # a scheduler, a client algorithm
        plugin.setup(context.num_clients)


def setup_plugin(plugin: Any, context: SetupContext) -> None:
    """Call ``plugin.setup(context)`` (or its old-style ``setup``, with a DeprecationWarning)."""
    if _takes_context(plugin):
        plugin.setup(context)
        return
    warnings.warn(
        f"{type(plugin).__name__}.setup{inspect.signature(plugin.setup)} is the old interface: write setup(self, context) "
        "(a lightning_asyncfl.context.SetupContext; see docs/extending.md)",
        DeprecationWarning, stacklevel=2,
    )  # fmt: skip
    _legacy_call(plugin, context)


def setup_plugins(
    context: SetupContext,
    plugins: Mapping[str, Any],
    check: Callable[[str, Callable[[], object]], bool] | None = None,
) -> dict[str, bool]:
    """Set up every plug-in of ``plugins`` (config key -> object, None skipped) once with ``context``.

    One object under two keys (FedAT, the aggregator that is also the scheduler) is set up
    once. Plug-ins are set up in :data:`ORDER`, then any other key in the given order.

    Args:
        context: what the plug-ins learn about the run.
        plugins: the plug-ins by config key (``server.aggregator``, ``delay``, ...).
        check: ``check(key, fn)`` runs ``fn`` and records its problem under ``key``
            (``build.build``'s collector); None: every problem is collected here and raised
            at the end as one :class:`ConfigError`.

    Returns:
        ``{key: set up without a problem}`` for each plug-in set up.
    """
    problems: list[str] = []

    def collect(key: str, fn: Callable[[], object]) -> bool:
        try:
            fn()
            return True
        except (InvalidValue, InvalidValues) as error:
            error = error.under(key)
            problems.extend(str(p) for p in error.problems) if isinstance(error, InvalidValues) else problems.append(str(error))
        except (ValueError, TypeError) as error:
            problems.append(f"{key}: {error}")
        return False

    run_check = check if check is not None else collect
    keys = [k for k in ORDER if k in plugins] + [k for k in plugins if k not in ORDER]
    done: dict[int, bool] = {}
    result: dict[str, bool] = {}
    for key in keys:
        plugin = plugins[key]
        if plugin is None:
            continue
        if id(plugin) not in done:
            done[id(plugin)] = run_check(key, lambda plugin=plugin: setup_plugin(plugin, context))
        result[key] = done[id(plugin)]
    if problems:
        raise ConfigError(problems)
    return result
