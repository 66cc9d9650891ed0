"""Hooks on the loop's events, and the callbacks that write a run's files."""

from lightning_asyncfl.callbacks.base import Callback
from lightning_asyncfl.callbacks.client_training import ClientTrainingCSV, client_means
from lightning_asyncfl.callbacks.files import ClientMetricsCSV, MetricsCSV, UpdatesCSV
from lightning_asyncfl.callbacks.loggers import LoggerCallback, build_loggers, check_loggers
from lightning_asyncfl.callbacks.plots import RunFigures, plot_accuracy, write_run_figures
from lightning_asyncfl.callbacks.progress import ProgressBar

__all__ = [
    "Callback", "ClientMetricsCSV", "ClientTrainingCSV", "LoggerCallback", "MetricsCSV", "ProgressBar", "RunFigures", "UpdatesCSV",
    "build_loggers", "check_loggers", "client_means", "plot_accuracy", "write_run_figures",
]  # fmt: skip
