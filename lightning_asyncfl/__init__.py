"""lightning_asyncfl: asynchronous federated learning on a deterministic virtual clock.

The public names are imported on first use: ``import lightning_asyncfl`` costs next to
nothing, and ``lightning_asyncfl.run`` imports what a run needs when it is first read.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING

from lightning_asyncfl._lazy import lazy_attributes

__version__ = "0.1.0"

_NAMES = {
    "AsyncAggregator": "lightning_asyncfl.aggregators", "FedAsync": "lightning_asyncfl.aggregators",
    "FedAvg": "lightning_asyncfl.aggregators", "FedBuff": "lightning_asyncfl.aggregators",
    "experiment": "lightning_asyncfl.api", "fit": "lightning_asyncfl.api", "Result": "lightning_asyncfl.api", "UpdateBuffer": "lightning_asyncfl.buffer",
    "Callback": "lightning_asyncfl.callbacks", "ClientTrainer": "lightning_asyncfl.client",
    "Evaluator": "lightning_asyncfl.client", "ConfigError": "lightning_asyncfl.errors",
    "InvalidValue": "lightning_asyncfl.errors", "AsyncFLLoop": "lightning_asyncfl.loop",
    "compose": "lightning_asyncfl.run", "run": "lightning_asyncfl.run", "Scheduler": "lightning_asyncfl.schedulers",
    "ClientUpdate": "lightning_asyncfl.state", "Job": "lightning_asyncfl.state", "Layout": "lightning_asyncfl.state",
    "ModelState": "lightning_asyncfl.state",
}  # fmt: skip

__all__ = [
    "AsyncAggregator", "AsyncFLLoop", "Callback", "ClientTrainer", "ClientUpdate", "ConfigError",
    "Evaluator", "FedAsync", "FedAvg", "FedBuff", "InvalidValue", "Job", "Layout", "ModelState",
    "Result", "Scheduler", "UpdateBuffer", "compose", "experiment", "fit", "run",
]  # fmt: skip

__getattr__, __dir__ = lazy_attributes(__name__, _NAMES, globals())


class _Package(types.ModuleType):
    """The package's module: ``lightning_asyncfl.run`` stays the function ``run`` once the
    module of the same name is imported (the import system sets the submodule on its
    package after loading it; an eager ``from lightning_asyncfl.run import run`` used to
    overwrite it)."""

    def __setattr__(self, name: str, value: object) -> None:
        if name == "run" and isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.run":
            value = value.run
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

if TYPE_CHECKING:
    from lightning_asyncfl.aggregators import AsyncAggregator, FedAsync, FedAvg, FedBuff
    from lightning_asyncfl.api import Result, experiment, fit
    from lightning_asyncfl.buffer import UpdateBuffer
    from lightning_asyncfl.callbacks import Callback
    from lightning_asyncfl.client import ClientTrainer, Evaluator
    from lightning_asyncfl.errors import ConfigError, InvalidValue
    from lightning_asyncfl.loop import AsyncFLLoop
    from lightning_asyncfl.run import compose, run
    from lightning_asyncfl.schedulers import Scheduler
    from lightning_asyncfl.state import ClientUpdate, Job, Layout, ModelState
