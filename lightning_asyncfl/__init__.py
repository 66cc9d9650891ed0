"""lightning_asyncfl: asynchronous federated learning on a deterministic virtual clock."""

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

__version__ = "0.1.0"

__all__ = [
    "AsyncAggregator", "AsyncFLLoop", "Callback", "ClientTrainer", "ClientUpdate", "ConfigError",
    "Evaluator", "FedAsync", "FedAvg", "FedBuff", "InvalidValue", "Job", "Layout", "ModelState",
    "Result", "Scheduler", "UpdateBuffer", "compose", "experiment", "fit", "run",
]  # fmt: skip
