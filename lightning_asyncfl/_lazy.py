"""Attributes of a package that are imported on first use (PEP 562).

``import lightning_asyncfl`` should not pay for Lightning's Trainer stack, torchvision,
scikit-learn or matplotlib before a run needs them: a sweep of a thousand small runs, or a
test suite, pays the import time once per process. A package lists its public names and
the module each comes from; :func:`lazy_attributes` returns the ``__getattr__`` and
``__dir__`` that import that module when the name is first read.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, names: Mapping[str, str], namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``names`` maps each public name to its module.

    A name once imported is stored in ``namespace`` (the package's globals), so the next
    read does not come back here.
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend, imported when a picture is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
