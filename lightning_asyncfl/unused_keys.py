"""Keys that do nothing: a set key that the chosen component ignores, named before training.

A sweep over ``server.aggregator.b`` under the default polynomial staleness gives
byte-identical runs (``b`` only acts under ``staleness=hinge``); so does ``trim`` without
``rule=trimmed_mean``. Each aggregator lists the keys it ignores with its settings
(:meth:`AsyncAggregator.unused_keys`); :func:`unused_key_warnings` names those that were
set, and :class:`UnusedSweepKeys` (a Hydra callback, in ``conf/config.yaml``) says at
the start of a multirun when every run of a sweep would be identical because of one.

A key counts as set when it is given on the command line (a Hydra override) or its value
differs from the constructor's default.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

#: the config node of each component whose ignored keys are checked
NODES = ("server.aggregator",)


def given_overrides() -> dict[str, str]:
    """``{key: value}`` of the running Hydra job's command-line overrides ({} outside Hydra)."""
    if not HydraConfig.initialized():
        return {}
    items = OmegaConf.to_container(HydraConfig.get().overrides.task)
    return dict(str(item).lstrip("+~").split("=", 1) for item in items if "=" in str(item))


def _default(component: Any, key: str) -> Any:
    parameter = inspect.signature(type(component)).parameters.get(key)
    return inspect.Parameter.empty if parameter is None else parameter.default


def unused_key_warnings(cfg: DictConfig, components: dict[str, Any], given: Iterable[str] = ()) -> list[str]:
    """One message per set key that its component ignores.

    Args:
        cfg: the composed config.
        components: ``{config node: built object}``, e.g. ``{"server.aggregator": FedAsync(...)}``.
        given: keys given on the command line (see :func:`given_overrides`).
    """
    given = set(given)
    messages = []
    for node, component in components.items():
        unused = getattr(component, "unused_keys", None)
        if component is None or not callable(unused):
            continue
        for key, why in unused().items():
            full = f"{node}.{key}"
            if OmegaConf.select(cfg, full, default=inspect.Parameter.empty) is inspect.Parameter.empty and full not in given:
                continue  # not in the config at all: the constructor's default, nothing was set
            value = OmegaConf.select(cfg, full, default=None)
            default = _default(component, key)
            if full in given or (default is not inspect.Parameter.empty and value != default):
                messages.append(
                    f"{full}={value} has no effect: {why} ({type(component).__name__}); "
                    f"runs that differ only in {full} are identical"
                )
    return messages


def _sweep_values(overrides: list[str]) -> dict[str, list[str]]:
    """``{key: [values]}`` of the sweep overrides (``key=a,b`` or ``key=range(...)``) among ``overrides``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    swept = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override() and not override.is_hydra_override():
            values = list(override.sweep_string_iterator())
            if len(values) > 1:
                swept[override.get_key_element()] = values
    return swept


def sweep_warnings(cfg: DictConfig) -> list[str]:
    """Messages for a multirun ``cfg`` whose swept keys its components ignore (their runs will be identical)."""
    from hydra.utils import instantiate

    swept = _sweep_values([str(o) for o in OmegaConf.to_container(cfg.hydra.overrides.task)])
    messages = []
    for node in NODES:
        keys = {k.removeprefix(node + "."): v for k, v in swept.items() if k.startswith(node + ".") and "." not in k[len(node) + 1 :]}
        if not keys or any(k == node.split(".")[0] or k == node for k in swept):  # the component itself is swept: runs differ anyway
            continue
        try:
            component = instantiate(OmegaConf.select(cfg, node), _convert_="all")
        except Exception:  # a bad value: each job reports it before training
            continue
        unused = component.unused_keys() if callable(getattr(component, "unused_keys", None)) else {}
        for key, values in keys.items():
            if key in unused:
                messages.append(
                    f"the sweep over {node}.{key} ({', '.join(values)}) changes nothing: {unused[key]} "
                    f"({type(component).__name__}); its {len(values)} values give identical runs"
                )
    return messages


class UnusedSweepKeys(HydraCallback):
    """A Hydra callback: at the start of a multirun, warn about swept keys that their component ignores."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        for message in sweep_warnings(config):
            log.warning(message)
