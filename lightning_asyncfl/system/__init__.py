"""The system model: compute, communication and device populations (config group ``system``)."""

from lightning_asyncfl.system.devices import Devices, FedScaleDevices, LogNormalDevices, PerSampleDevices
from lightning_asyncfl.system.flops import training_flops_per_example
from lightning_asyncfl.system.model import JobCost, SystemModel
from lightning_asyncfl.system.traces import read_trace

__all__ = ["Devices", "FedScaleDevices", "JobCost", "LogNormalDevices", "PerSampleDevices", "SystemModel", "read_trace", "training_flops_per_example"]
