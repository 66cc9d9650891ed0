"""The system model: how many virtual seconds a job takes, from the work it does.

A job of client k that processes ``E`` examples (its samples x local epochs) of a model
costing ``F`` FLOPs per example (forward + backward, counted), downloading ``B_down``
bytes and uploading ``B_up`` bytes takes

    T = B_down / down_k  +  E * F / compute_k  +  B_up / up_k  +  latency  (+ delay)

each term times a per-job log-normal jitter ``exp(jitter * z)`` (a device's load and
network vary from job to job; 0: none). ``down_k``, ``compute_k`` and ``up_k`` come from
the device population (:mod:`lightning_asyncfl.system.devices`); the ``delay`` group's
distributions add on top as latency or noise. ``devices=None`` charges nothing for the work
(only the delay counts, as before there was a system model); bytes are still counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lightning_asyncfl import seeding
from lightning_asyncfl.context import SetupContext
from lightning_asyncfl.errors import checking
from lightning_asyncfl.state import ModelState
from lightning_asyncfl.system.devices import Devices

__all__ = ["JobCost", "SystemModel"]


@dataclass(frozen=True)
class JobCost:
    """The parts of one job's duration, in virtual seconds, and what it sent."""

    download_time: float = 0.0
    compute_time: float = 0.0
    upload_time: float = 0.0
    latency: float = 0.0
    download_bytes: int = 0
    upload_bytes: int = 0
    examples: int = 0

    @property
    def total(self) -> float:
        """Download + compute + upload + latency."""
        return self.download_time + self.compute_time + self.upload_time + self.latency


class SystemModel:
    """Job durations from the work each job does (config group ``system``).

    Args:
        devices: the device population (compute speed and bandwidths per client); None:
            the work costs no time (the ``delay`` group alone decides).
        flops_per_example: the model's training FLOPs per example; null: counted from the
            model (one forward and backward pass of its ``training_step``).
        latency: fixed seconds added to every job (round trips, server work; >= 0).
        jitter: spread of a per-job log-normal factor on each time (>= 0; 0: none).
    """

    def __init__(self, *, devices: Devices | None = None, flops_per_example: float | None = None,
                 latency: float = 0.0, jitter: float = 0.0) -> None:
        with checking() as check:
            check(devices is None or isinstance(devices, Devices), "devices", type(devices).__name__, "null or a lightning_asyncfl.system.Devices")
            check(flops_per_example is None or (_real(flops_per_example) and flops_per_example >= 0), "flops_per_example", flops_per_example, "null (counted) or a finite number >= 0")
            check(_real(latency) and latency >= 0, "latency", latency, "a finite number >= 0")
            check(_real(jitter) and jitter >= 0, "jitter", jitter, "a finite number >= 0")
        self.devices = devices
        self.flops_per_example = None if flops_per_example is None else float(flops_per_example)
        self.latency, self.jitter = float(latency), float(jitter)
        self.epochs = 1
        self._upload_side: Callable[[ModelState], int] = lambda base: 0
        self._upload_model: Callable[[ModelState], int] | None = None  # compressed or masked uploads (lightning_asyncfl.privacy)
        self._num_samples: tuple[int, ...] = ()

    @property
    def charges_time(self) -> bool:
        """Whether the work takes virtual time (a device population is set)."""
        return self.devices is not None

    def set_work(self, *, epochs: int, flops_per_example: float | None,
                 upload_side: Callable[[ModelState], int] | None = None,
                 upload_model: Callable[[ModelState], int] | None = None) -> None:
        """What a job does: the clients' local epochs, the counted FLOPs per example (used unless
        ``flops_per_example`` was given) and the bytes a client sends besides its model (the client
        algorithm's, e.g. SCAFFOLD's control variate); ``upload_model``: the bytes of the model part
        when it is not sent whole (a compressed or masked delta, :mod:`lightning_asyncfl.privacy`)."""
        self.epochs = int(epochs)
        if self.flops_per_example is None:
            self.flops_per_example = float(flops_per_example or 0.0)
        if upload_side is not None:
            self._upload_side = upload_side
        if upload_model is not None:
            self._upload_model = upload_model

    def upload_bytes(self, base: ModelState) -> int:
        """Bytes a job that starts from ``base`` sends back: the trained model (without what the
        server sent beside it) plus what the client algorithm adds."""
        side = sum(t.numel() * t.element_size() for t in base.side.values())
        model = base.nbytes - side if self._upload_model is None else int(self._upload_model(base))
        return model + int(self._upload_side(base))

    def setup(self, context: SetupContext | list[int] | tuple[int, ...], rng: np.random.Generator | None = None) -> None:
        """Give each client its device, drawn from the run's device stream (``setup(num_samples, rng)`` still works)."""
        if isinstance(context, SetupContext):
            num_samples, rng = context.num_samples, context.stream(seeding.DEVICES)
        else:
            num_samples = context
        self._num_samples = tuple(int(n) for n in num_samples)
        if self.devices is not None:
            self.devices.setup(len(self._num_samples), rng)

    def examples(self, client: int) -> int:
        """Examples one job of ``client`` processes: its samples x local epochs."""
        return self._num_samples[client] * self.epochs

    def cost(self, client: int, download_bytes: int, upload_bytes: int, rng: np.random.Generator) -> JobCost:
        """The cost of one job of ``client``; ``rng`` (the run's delay stream) draws the jitter."""
        examples = self.examples(client)
        devices = self.devices
        if devices is None:
            return JobCost(latency=self.latency, download_bytes=download_bytes, upload_bytes=upload_bytes, examples=examples)
        times = [devices.download_seconds(client, download_bytes),
                 devices.compute_seconds(client, examples, self.flops_per_example or 0.0),
                 devices.upload_seconds(client, upload_bytes)]  # fmt: skip
        if self.jitter > 0:
            times = [t * math.exp(self.jitter * z) for t, z in zip(times, rng.standard_normal(3))]
        return JobCost(*times, latency=self.latency, download_bytes=download_bytes, upload_bytes=upload_bytes, examples=examples)

    def __repr__(self) -> str:
        return (f"SystemModel(devices={self.devices!r}, flops_per_example={self.flops_per_example!r}, "
                f"latency={self.latency!r}, jitter={self.jitter!r})")


def _real(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
