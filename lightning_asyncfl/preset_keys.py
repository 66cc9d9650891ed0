"""A ``_target_`` override that meets keys its class does not take: name them and how to drop them.

``model._target_=my.Net`` keeps every other key of the preset (``model=cnn`` sets
``channels``, ``hidden``, ``optimizer``, ...). Python's own error names one keyword
(``unexpected keyword argument 'channels'``); :func:`check_target_keys` names all of them
before the class is called, says which came from the preset, and gives the exact ``~key``
overrides that drop them, or how to replace the whole node.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lightning_asyncfl.unused_keys import given_overrides

__all__ = ["UnexpectedKeys", "check_target_keys", "unexpected_keys"]

#: Hydra's own keys of a node, never passed to the class
HYDRA_KEYS = frozenset({"_target_", "_recursive_", "_convert_", "_partial_", "_args_"})


class UnexpectedKeys(TypeError):
    """Keys of a config node that its ``_target_`` does not accept (the message says how to drop them)."""


def unexpected_keys(target: str, keys: Iterable[str]) -> list[str] | None:
    """The keys among ``keys`` that ``target``'s constructor does not take, or None when
    that cannot be told (the target does not import, or it takes ``**kwargs``)."""
    from hydra.utils import get_object

    try:
        obj = get_object(str(target))
        signature = inspect.signature(obj)
    except Exception:  # an import error is instantiate's to report, with its own message
        return None
    params = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    accepted = {p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    return [k for k in keys if k not in HYDRA_KEYS and k not in accepted]


def _preset(path: str) -> str | None:
    """The option of the config group at ``path`` this run composed (``cnn`` for ``model``), if Hydra knows it."""
    if not HydraConfig.initialized():
        return None
    choice = HydraConfig.get().runtime.choices.get(path)
    return None if choice in (None, "null") else str(choice)


def check_target_keys(node: DictConfig, passed: Iterable[str] = (), path: str | None = None) -> None:
    """Raise :class:`UnexpectedKeys` when ``node`` holds keys its ``_target_`` does not take.

    Args:
        node: the config node about to be instantiated.
        passed: keywords the caller passes besides the node's keys (``partition``, ``seed``).
        path: the node's full key (``model``); default: the node's own.
    """
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if target is None:
        return
    path = path or node._get_full_key(None) or "node"
    extra = unexpected_keys(str(target), [str(k) for k in node.keys() if str(k) not in set(passed)])
    if not extra:
        return
    overrides = given_overrides()
    on_command_line = [k for k in extra if f"{path}.{k}" in overrides]
    from_preset = [k for k in extra if k not in on_command_line]
    preset = _preset(path)
    origin = []
    if from_preset:
        origin.append(f"{', '.join(from_preset)} set by the preset" + (f" {path}={preset}" if preset else f" of the {path} group"))
    if on_command_line:
        origin.append(f"{', '.join(on_command_line)} given on the command line")
    drop = " ".join(f"~{path}.{k}" for k in extra)
    raise UnexpectedKeys(
        f"{target} does not take the key(s) {', '.join(extra)} ({'; '.join(origin)}). "
        f"Drop them with the overrides: {drop} ; "
        f"or replace the whole node: ~{path} '+{path}={{_target_: {target}, ...}}' (only the keys you give), "
        f"or write your own {path}/NAME.yaml in a config directory and run with --config-dir=DIR {path}=NAME"
    )

