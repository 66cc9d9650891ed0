"""Hooks on the loop's events, and the callbacks that write a run's files."""

from lightning_asyncfl.callbacks.base import Callback
from lightning_asyncfl.callbacks.files import ClientMetricsCSV, MetricsCSV, UpdatesCSV
from lightning_asyncfl.callbacks.loggers import LoggerCallback, build_loggers, check_loggers
from lightning_asyncfl.callbacks.plots import RunFigures, plot_accuracy, write_run_figures
from lightning_asyncfl.callbacks.progress import ProgressBar

__all__ = [
    "Callback", "ClientMetricsCSV", "LoggerCallback", "MetricsCSV", "ProgressBar", "RunFigures", "UpdatesCSV",
    "build_loggers", "check_loggers", "plot_accuracy", "write_run_figures",
]  # fmt: skip
