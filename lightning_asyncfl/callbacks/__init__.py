"""Hooks on the loop's events, and the callbacks that write a run's files."""

from lightning_asyncfl.callbacks.base import Callback
from lightning_asyncfl.callbacks.files import MetricsCSV, UpdatesCSV
from lightning_asyncfl.callbacks.plots import plot_accuracy, write_run_figures
from lightning_asyncfl.callbacks.progress import ProgressBar

__all__ = ["Callback", "MetricsCSV", "ProgressBar", "UpdatesCSV", "plot_accuracy", "write_run_figures"]
