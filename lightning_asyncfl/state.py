"""Model state as one flat vector, and the records that travel between loop and clients.

An aggregation is a handful of vector operations on :attr:`ModelState.flat`, not a loop
over tensors; :meth:`ModelState.as_dict` gives the readable per-tensor view of the same
memory. Floating-point parameters and buffers live in the flat vector; integer buffers
(BatchNorm's ``num_batches_tracked``) are kept aside in :attr:`ModelState.extras`: they
are counters, not weights, so they are never averaged, and the global model keeps its own.

``to_plain()``/``from_plain()`` turn a :class:`Layout`, a :class:`ModelState`, a
:class:`Job` and a :class:`ClientUpdate` into tensors and plain values (dicts, lists,
numbers, strings) and back: what a checkpoint holds, loadable with
``torch.load(weights_only=True)``.

Convention: a ``ModelState`` is never modified in place once it has been handed to the
loop (aggregators return a new one), so the loop keeps a snapshot of a version by
holding a reference.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Layout:
    """Where each named floating-point tensor lives in the flat vector."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    offsets: tuple[int, ...]  # start of each tensor; offsets[-1] + numel of the last = size
    size: int
    num_parameters: int  # the first ``num_parameters`` names are parameters, the rest buffers

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor], num_parameters: int) -> Layout:
        """The layout of ``tensors`` in iteration order."""
        offsets, shapes, at = [], [], 0
        for t in tensors.values():
            offsets.append(at)
            shapes.append(t.shape)
            at += t.numel()
        return cls(tuple(tensors), tuple(shapes), tuple(offsets), at, num_parameters)

    @property
    def parameter_size(self) -> int:
        """Length of the leading part of the flat vector that holds parameters."""
        if self.num_parameters == len(self.names):
            return self.size
        return self.offsets[self.num_parameters]

    def parameter_views(self, vector: Tensor) -> list[Tensor]:
        """Per-parameter views (no copies) into ``vector``, the flat vector or its parameter part."""
        return [
            vector[off : off + shape.numel()].view(shape)
            for shape, off in zip(self.shapes[: self.num_parameters], self.offsets[: self.num_parameters])
        ]

    def views(self, flat: Tensor) -> dict[str, Tensor]:
        """Per-name views (no copies) into ``flat``."""
        return {
            name: flat[off : off + shape.numel()].view(shape)
            for name, shape, off in zip(self.names, self.shapes, self.offsets)
        }

    def to_plain(self) -> dict[str, Any]:
        """Names, shapes (lists), offsets, size and number of parameters as plain values."""
        return {
            "names": list(self.names), "shapes": [list(s) for s in self.shapes], "offsets": list(self.offsets),
            "size": self.size, "num_parameters": self.num_parameters,
        }  # fmt: skip

    @classmethod
    def from_plain(cls, plain: Mapping[str, Any]) -> Layout:
        """The layout :meth:`to_plain` gave."""
        return cls(
            tuple(plain["names"]), tuple(torch.Size(s) for s in plain["shapes"]), tuple(int(o) for o in plain["offsets"]),
            int(plain["size"]), int(plain["num_parameters"]),
        )  # fmt: skip


@dataclass(frozen=True)
class ModelState:
    """A model's floating-point state as one flat tensor plus its layout.

    Attributes:
        flat: 1-D tensor holding every floating-point parameter and buffer.
        layout: names, shapes and offsets of the tensors in ``flat``.
        extras: non-floating buffers (integer counters), carried but never averaged.
        side: tensors that travel with the model but are not part of it: from the server
            to clients with a global model (SCAFFOLD's control variate ``control``), and
            from a client to the server with its update (``control_delta``).
    """

    flat: Tensor
    layout: Layout
    extras: Mapping[str, Tensor] = field(default_factory=dict)
    side: Mapping[str, Tensor] = field(default_factory=dict)

    @classmethod
    def from_module(cls, module: nn.Module) -> ModelState:
        """Copy a module's parameters and floating buffers into a new flat state."""
        params = dict(module.named_parameters())
        floats, extras = dict(params), {}
        for name, buf in module.named_buffers():
            if buf.is_floating_point():
                floats[name] = buf
            else:
                extras[name] = buf.detach().clone()
        layout = Layout.from_tensors(floats, num_parameters=len(params))
        dtype = _common_dtype(floats.values())
        flat = torch.cat([t.detach().reshape(-1).to(dtype) for t in floats.values()]) if floats else torch.zeros(0)
        return cls(flat, layout, extras)

    def as_dict(self) -> dict[str, Tensor]:
        """Readable per-tensor views of :attr:`flat` (no copies)."""
        return self.layout.views(self.flat)

    def state_dict(self) -> dict[str, Tensor]:
        """A full ``state_dict`` (floating tensors cloned, plus extras) for ``load_state_dict`` / ``torch.save``."""
        out = {name: t.clone() for name, t in self.as_dict().items()}
        out.update({name: t.clone() for name, t in self.extras.items()})
        return out

    @property
    def nbytes(self) -> int:
        """Bytes of everything the state carries: the flat vector, the extras and the side tensors, each at its dtype."""
        tensors = [self.flat, *self.extras.values(), *self.side.values()]
        return sum(t.numel() * t.element_size() for t in tensors)

    @property
    def parameters(self) -> Tensor:
        """View of the parameter part of :attr:`flat` (buffers excluded)."""
        return self.flat[: self.layout.parameter_size]

    def with_flat(self, flat: Tensor) -> ModelState:
        """A new state with the same layout, extras and side tensors and the given flat vector."""
        if flat.shape != self.flat.shape:
            raise ValueError(f"flat vector of shape {tuple(flat.shape)} does not fit layout of size {self.layout.size}")
        return ModelState(flat, self.layout, self.extras, self.side)

    def with_side(self, **tensors: Tensor) -> ModelState:
        """A new state sharing this one's tensors, with ``tensors`` added to (or replacing) :attr:`side`."""
        return ModelState(self.flat, self.layout, self.extras, {**self.side, **tensors})

    def to_plain(self, *, layout: bool = True) -> dict[str, Any]:
        """The state's tensors, on the CPU, as ``{"flat", "extras", "side"}`` plus ``"layout"``
        (plain values) unless ``layout=False`` (a checkpoint stores the layout once)."""
        plain: dict[str, Any] = {
            "flat": self.flat.detach().cpu(),
            "extras": {k: v.detach().cpu() for k, v in self.extras.items()},
            "side": {k: v.detach().cpu() for k, v in self.side.items()},
        }
        if layout:
            plain["layout"] = self.layout.to_plain()
        return plain

    @classmethod
    def from_plain(cls, plain: Mapping[str, Any], layout: Layout | None = None, device: torch.device | str = "cpu") -> ModelState:
        """The state :meth:`to_plain` gave, on ``device``; ``layout`` where the plain form has none."""
        if layout is None:
            if "layout" not in plain:
                raise ValueError("a ModelState saved without its layout (to_plain(layout=False)) needs layout=")
            layout = Layout.from_plain(plain["layout"])
        return cls(
            plain["flat"].to(device), layout,
            {k: v.to(device) for k, v in plain["extras"].items()}, {k: v.to(device) for k, v in plain["side"].items()},
        )  # fmt: skip

    def to(self, device: torch.device | str) -> ModelState:
        """This state on ``device`` (self if it is already there)."""
        if self.flat.device == torch.device(device):
            return self
        return ModelState(
            self.flat.to(device),
            self.layout,
            {k: v.to(device) for k, v in self.extras.items()},
            {k: v.to(device) for k, v in self.side.items()},
        )


def _common_dtype(tensors: Any) -> torch.dtype:
    dtypes = {t.dtype for t in tensors}
    if not dtypes:
        return torch.get_default_dtype()
    return functools.reduce(torch.promote_types, dtypes)


@dataclass(frozen=True)
class Job:
    """One client's local training, fixed entirely at dispatch.

    Attributes:
        job_id: dispatch order, 0, 1, 2, ...; breaks ties between equal arrival times.
        client_id: which client trains.
        base_version: the global model version the job starts from.
        seed: seed of the job's own random stream, derived from (run seed, job id).
        dispatch_time: virtual time of dispatch.
        arrival_time: virtual time at which its update reaches the server.
        attempt: 0 for the first run of the job; 1, 2, ... for its retries after a
            failure (``server.on_client_error=retry``): same client, base and seed.
        download_time, compute_time, upload_time: the parts of the job's duration that
            the system model charged (virtual seconds; see :mod:`lightning_asyncfl.system`);
            the rest of ``arrival_time - dispatch_time`` is latency and the delay's noise.
        download_bytes, upload_bytes: what the job receives and sends.
        examples: training examples it processes (samples x local epochs).
    """

    job_id: int
    client_id: int
    base_version: int
    seed: int
    dispatch_time: float
    arrival_time: float
    attempt: int = 0
    download_time: float = 0.0
    compute_time: float = 0.0
    upload_time: float = 0.0
    download_bytes: int = 0
    upload_bytes: int = 0
    examples: int = 0

    def to_plain(self) -> dict[str, Any]:
        """Every field, as plain numbers."""
        return dict(vars(self))

    @classmethod
    def from_plain(cls, plain: Mapping[str, Any]) -> Job:
        """The job :meth:`to_plain` gave (fields absent from an older checkpoint take their defaults)."""
        return cls(**plain)


@dataclass
class ClientUpdate:
    """What a client sends back, as the aggregator sees it.

    ``delta`` is ``state.flat - base.flat`` (trained minus base).
    """

    job: Job
    state: ModelState
    base: ModelState
    num_samples: int
    metrics: dict[str, float] = field(default_factory=dict)
    staleness: int = 0

    client_id = property(lambda self: self.job.client_id, doc="Id of the client that trained.")
    job_id = property(lambda self: self.job.job_id, doc="Id of the job.")
    base_version = property(lambda self: self.job.base_version, doc="Global version the job started from.")
    dispatch_time = property(lambda self: self.job.dispatch_time, doc="Virtual dispatch time.")
    arrival_time = property(lambda self: self.job.arrival_time, doc="Virtual arrival time.")

    def to_plain(self) -> dict[str, Any]:
        """The update as tensors and plain values: its job, trained state (without layout),
        samples, metrics and staleness. ``base`` is left out: it is the global model of
        ``base_version``, which a checkpoint stores once by version."""
        return {
            "job": self.job.to_plain(), "state": self.state.to_plain(layout=False), "num_samples": self.num_samples,
            "metrics": dict(self.metrics), "staleness": self.staleness,
        }  # fmt: skip

    @classmethod
    def from_plain(cls, plain: Mapping[str, Any], *, base: ModelState, device: torch.device | str | None = None) -> ClientUpdate:
        """The update :meth:`to_plain` gave, starting from ``base`` (its layout and, by default, its device)."""
        device = base.flat.device if device is None else device
        return cls(
            job=Job.from_plain(plain["job"]), state=ModelState.from_plain(plain["state"], base.layout, device), base=base,
            num_samples=int(plain["num_samples"]), metrics=dict(plain["metrics"]), staleness=int(plain["staleness"]),
        )  # fmt: skip

    @functools.cached_property
    def delta(self) -> Tensor:
        """Trained minus base weights, flat (computed once)."""
        return self.state.flat - self.base.flat


@dataclass
class JobResult:
    """What a trained job hands back to the loop.

    Attributes:
        state: the client's trained model (its ``side`` holds what the client algorithm
            sends to the server, e.g. SCAFFOLD's ``control_delta``).
        metrics: mean of what the module's ``self.log`` sent during the job.
        client_state: the client's own persistent tensors after the job (SCAFFOLD's c_i),
            kept by the loop and handed to the client's next job; empty for most methods.
    """

    state: ModelState
    metrics: dict[str, float] = field(default_factory=dict)
    client_state: dict[str, Tensor] = field(default_factory=dict)
