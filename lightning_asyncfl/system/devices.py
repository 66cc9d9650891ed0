"""Device populations: each client's compute speed and network bandwidths.

A :class:`Devices` draws (or reads) one device per client in :meth:`Devices.setup` and
turns a job's work into seconds: compute from the FLOPs it runs, download and upload from
the bytes it sends. Three populations are built in:

- :class:`LogNormalDevices` (the default): speeds and bandwidths log-normal around stated
  medians, the shape FedScale's log-normal completion model and PAPAYA report for device
  speeds;
- :class:`FedScaleDevices`: FedScale's device trace (``client_device_capacity``), a mapping
  ``client id -> {"computation": ms per sample, "communication": kbit/s}``, with FedScale's
  own arithmetic;
- :class:`PerSampleDevices`: given seconds per sample per client (compute time = examples
  processed x the client's factor), optional fixed bandwidths.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import numpy as np

from lightning_asyncfl.errors import InvalidValue, checking
from lightning_asyncfl.system.traces import finite, read_trace

__all__ = ["Devices", "FedScaleDevices", "LogNormalDevices", "PerSampleDevices"]


class Devices(abc.ABC):
    """One device per client: how long its work takes.

    Subclasses write :meth:`_setup` (fill ``compute``, ``download`` and ``upload``: one
    value per client) and may override :meth:`compute_seconds` when their speeds are not
    FLOP/s (a trace of milliseconds per sample).
    """

    def __init__(self) -> None:
        self.compute = np.zeros(0)  # FLOP/s per client (or what compute_seconds reads)
        self.download = np.zeros(0)  # bytes/s per client
        self.upload = np.zeros(0)  # bytes/s per client

    def setup(self, num_clients: int, rng: np.random.Generator) -> None:
        """Give each of ``num_clients`` clients its device; ``rng`` is the run's device stream."""
        self._setup(int(num_clients), rng)
        for name in ("compute", "download", "upload"):
            values = getattr(self, name)
            if values.shape != (num_clients,) or not (np.isfinite(values).all() and (values > 0).all()):
                raise ValueError(f"{type(self).__name__} must give every client a finite {name} speed > 0")

    @abc.abstractmethod
    def _setup(self, num_clients: int, rng: np.random.Generator) -> None:
        """Fill ``self.compute``, ``self.download`` and ``self.upload``, one value per client."""

    def compute_seconds(self, client: int, examples: int, flops_per_example: float) -> float:
        """Seconds for ``client`` to train on ``examples`` examples of ``flops_per_example`` each."""
        return examples * flops_per_example / float(self.compute[client])

    def download_seconds(self, client: int, nbytes: int) -> float:
        """Seconds for ``client`` to receive ``nbytes`` bytes."""
        return nbytes / float(self.download[client])

    def upload_seconds(self, client: int, nbytes: int) -> float:
        """Seconds for ``client`` to send ``nbytes`` bytes."""
        return nbytes / float(self.upload[client])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in self._args().items()) + ")"

    def _args(self) -> dict[str, Any]:
        return {}


class LogNormalDevices(Devices):
    """A parametric population: log-normal compute speed and bandwidths.

    Client k gets, once, ``compute_k = compute_median * exp(compute_sigma * z)``,
    ``download_k = download_median * exp(bandwidth_sigma * z')`` and
    ``upload_k = upload_median * exp(bandwidth_sigma * z'')`` with independent standard
    normal ``z``. The median is the population's typical device; sigma its spread (0:
    identical devices). See docs/system.md for where the defaults come from.

    Args:
        compute_median: median sustained training throughput, FLOP/s (> 0).
        compute_sigma: spread of log compute speed (>= 0).
        download_median: median download bandwidth, bytes/s (> 0).
        upload_median: median upload bandwidth, bytes/s (> 0).
        bandwidth_sigma: spread of log bandwidth (>= 0).
    """

    def __init__(
        self,
        *,
        compute_median: float = 1.0e10,
        compute_sigma: float = 0.6,
        download_median: float = 6.25e6,
        upload_median: float = 1.25e6,
        bandwidth_sigma: float = 0.6,
    ) -> None:
        super().__init__()
        with checking() as check:
            for key, value, positive in (("compute_median", compute_median, True), ("compute_sigma", compute_sigma, False),
                                         ("download_median", download_median, True), ("upload_median", upload_median, True),
                                         ("bandwidth_sigma", bandwidth_sigma, False)):  # fmt: skip
                ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
                check(ok and (value > 0 if positive else value >= 0), key, value, "a finite number " + ("> 0" if positive else ">= 0"))
        self.compute_median, self.compute_sigma = float(compute_median), float(compute_sigma)
        self.download_median, self.upload_median = float(download_median), float(upload_median)
        self.bandwidth_sigma = float(bandwidth_sigma)

    def _setup(self, num_clients: int, rng: np.random.Generator) -> None:
        z = rng.standard_normal((3, num_clients))
        self.compute = self.compute_median * np.exp(self.compute_sigma * z[0])
        self.download = self.download_median * np.exp(self.bandwidth_sigma * z[1])
        self.upload = self.upload_median * np.exp(self.bandwidth_sigma * z[2])

    def _args(self) -> dict[str, Any]:
        return {"compute_median": self.compute_median, "compute_sigma": self.compute_sigma,
                "download_median": self.download_median, "upload_median": self.upload_median,
                "bandwidth_sigma": self.bandwidth_sigma}  # fmt: skip


class FedScaleDevices(Devices):
    """FedScale's device trace: ``{client: {"computation": ms/sample, "communication": kbit/s}}``.

    FedScale (Lai et al., ICML 2022, https://arxiv.org/abs/2105.11367) measured
    ``computation`` as a device's inference latency per sample (AI Benchmark) and
    ``communication`` as its bandwidth in kbit/s (MobiPerf). Its simulator charges a job
    ``augmentation_factor * examples * computation / 1000`` seconds of compute (training
    costs about three inferences) and ``size_kbit / communication`` seconds each way.
    This class does the same. Entries with ``dl_kbps`` and ``ul_kbps`` (FedScale's later
    traces) use those for download and upload.

    Client k takes the trace's entry number ``k % len(trace)`` in the file's order
    (FedScale maps its clients onto profiles by id modulo the trace's length too).

    Args:
        file: the trace: FedScale's pickle (read without running code), JSON or CSV
            (``client_id,computation,communication``).
        augmentation_factor: training cost in inferences per sample (FedScale: 3).
        reference_flops: the FLOPs per example of the model the trace was measured with;
            when set, compute time scales with this run's FLOPs per example / it, so a
            bigger model takes longer. null: the trace's times as they are (FedScale's).
    """

    def __init__(self, *, file: str, augmentation_factor: float = 3.0, reference_flops: float | None = None) -> None:
        super().__init__()
        with checking() as check:
            check(isinstance(augmentation_factor, (int, float)) and not isinstance(augmentation_factor, bool)
                  and math.isfinite(augmentation_factor) and augmentation_factor > 0,
                  "augmentation_factor", augmentation_factor, "a finite number > 0")  # fmt: skip
            check(reference_flops is None or (isinstance(reference_flops, (int, float)) and not isinstance(reference_flops, bool)
                  and math.isfinite(reference_flops) and reference_flops > 0), "reference_flops", reference_flops, "null or a number > 0")  # fmt: skip
        self.file = str(file)
        self.augmentation_factor = float(augmentation_factor)
        self.reference_flops = None if reference_flops is None else float(reference_flops)
        self.entries = self._read(self.file)  # fails before any training

    @staticmethod
    def _read(file: str) -> list[tuple[float, float, float]]:
        """``(ms per sample, download kbit/s, upload kbit/s)`` per trace entry, in file order."""
        trace = read_trace(file)
        if not isinstance(trace, dict) or not trace:
            raise InvalidValue("file", file, "a non-empty mapping client id -> {computation, communication}")
        entries = []
        for cid, entry in trace.items():
            if not isinstance(entry, dict) or "computation" not in entry or not ({"communication"} <= set(entry) or {"dl_kbps", "ul_kbps"} <= set(entry)):
                raise InvalidValue("file", file, f"entries with computation and communication (entry {cid!r} is {entry!r})")
            comp = finite(f"file[{cid}].computation", entry["computation"], positive=True)
            down = finite(f"file[{cid}].dl_kbps", entry.get("dl_kbps", entry.get("communication")), positive=True)
            up = finite(f"file[{cid}].ul_kbps", entry.get("ul_kbps", entry.get("communication")), positive=True)
            entries.append((comp, down, up))
        return entries

    def _setup(self, num_clients: int, rng: np.random.Generator) -> None:
        rows = np.asarray([self.entries[k % len(self.entries)] for k in range(num_clients)], dtype=np.float64)
        self.compute = rows[:, 0]  # ms per sample (inference)
        self.download = rows[:, 1] * 1000.0 / 8.0  # kbit/s -> bytes/s
        self.upload = rows[:, 2] * 1000.0 / 8.0

    def compute_seconds(self, client: int, examples: int, flops_per_example: float) -> float:
        scale = 1.0 if self.reference_flops is None else flops_per_example / self.reference_flops
        return self.augmentation_factor * examples * float(self.compute[client]) / 1000.0 * scale

    def _args(self) -> dict[str, Any]:
        return {"file": self.file, "entries": len(self.entries), "augmentation_factor": self.augmentation_factor,
                "reference_flops": self.reference_flops}  # fmt: skip


class PerSampleDevices(Devices):
    """Given client speeds: a job of client k computes for ``examples x seconds_per_sample[k]``.

    The per-sample speed of published asynchronous FL workloads (a client's delay is
    proportional to the samples it processes, times its own factor): compute time is
    ``E_k * s_k`` with ``E_k`` the examples the job processes (the client's samples x local
    epochs) and ``s_k`` the client's seconds per sample, whatever the model's FLOPs.
    Communication takes ``bytes / bandwidth`` when ``download`` and ``upload`` are given,
    else no time.

    Args:
        seconds_per_sample: one number > 0 per client, client 0 first; or
        file: a file holding them: a JSON list, or text with one number per line.
        download: every client's download bandwidth in bytes/s (> 0), or null: no download time.
        upload: every client's upload bandwidth in bytes/s (> 0), or null: no upload time.
    """

    def __init__(self, *, seconds_per_sample: list[float] | None = None, file: str | None = None,
                 download: float | None = None, upload: float | None = None) -> None:
        super().__init__()
        with checking() as check:
            check((seconds_per_sample is None) != (file in (None, "")), "seconds_per_sample", seconds_per_sample,
                  "one number > 0 per client, or null with system.devices.file set (exactly one of the two)")  # fmt: skip
            for key, value in (("download", download), ("upload", upload)):
                check(value is None or (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0),
                      key, value, "null (no communication time) or a bandwidth in bytes/s > 0")  # fmt: skip
        self.file = None if file in (None, "") else str(file)
        values = self._read(self.file) if self.file is not None else seconds_per_sample
        if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple, np.ndarray)):
            raise InvalidValue("seconds_per_sample", values, "a list of numbers > 0, one per client")
        self.seconds_per_sample = tuple(finite(f"seconds_per_sample[{k}]", v, positive=True) for k, v in enumerate(values))
        self.download_bandwidth = None if download is None else float(download)
        self.upload_bandwidth = None if upload is None else float(upload)

    @staticmethod
    def _read(file: str) -> list[Any]:
        from pathlib import Path

        path = Path(file).expanduser()
        if not path.is_file():
            raise InvalidValue("file", file, "an existing file: a JSON list of seconds per sample, or one number per line")
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            values = read_trace(file)
            if not isinstance(values, list):
                raise InvalidValue("file", file, "a JSON list of seconds per sample, one per client")
            return values
        values = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    values.append(float(line))
                except ValueError:
                    raise InvalidValue("file", file, f"one number per line (line {lineno} is {line.strip()[:40]!r})") from None
        return values

    def _setup(self, num_clients: int, rng: np.random.Generator) -> None:
        if len(self.seconds_per_sample) != num_clients:
            source = f" (read from {self.file})" if self.file is not None else ""
            raise InvalidValue("seconds_per_sample", f"{len(self.seconds_per_sample)} values{source}", f"one value per client ({num_clients})")
        self.compute = np.asarray(self.seconds_per_sample, dtype=np.float64)  # seconds per sample
        self.download = np.full(num_clients, self.download_bandwidth or 1.0)
        self.upload = np.full(num_clients, self.upload_bandwidth or 1.0)

    def compute_seconds(self, client: int, examples: int, flops_per_example: float) -> float:
        return examples * float(self.compute[client])

    def download_seconds(self, client: int, nbytes: int) -> float:
        return 0.0 if self.download_bandwidth is None else super().download_seconds(client, nbytes)

    def upload_seconds(self, client: int, nbytes: int) -> float:
        return 0.0 if self.upload_bandwidth is None else super().upload_seconds(client, nbytes)

    def _args(self) -> dict[str, Any]:
        shown = {"file": self.file} if self.file is not None else {"seconds_per_sample": list(self.seconds_per_sample)}
        return {**shown, "download": self.download_bandwidth, "upload": self.upload_bandwidth}
