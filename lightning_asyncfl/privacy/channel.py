"""UploadChannel: what a client's update goes through between its training and the aggregator.

One object holds the three options of the upload path and the state they keep:

1. on the client (:meth:`UploadChannel.on_upload`, at the update's arrival, in arrival
   order, so every executor gives the same bytes): x = Δ + e (error feedback's residual),
   x ← clip(x, C) (DP), x ← x + N(0, z²C²) (local DP), Δ̂ = decompress(compress(x)), e ← x − Δ̂;
   in central mode the server clips Δ̂ to C again (a quantized vector may be a little longer);
2. on the server (:meth:`UploadChannel.aggregate`): secure aggregation of the buffer (the
   aggregator then receives K copies of the buffer's staleness-weighted mean, never one
   client's delta), central DP noise, the privacy accountant and its budget.

Random draws come from the run's seeded streams keyed by job id (QSGD, local noise) or by
the aggregation (central noise). The channel is also a :class:`Callback`: it learns of
dropouts (SecAgg must unmask around them), and its ``state_dict`` (residuals, the
accountant's histories) is checkpointed with the run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lightning_asyncfl import seeding
from lightning_asyncfl.aggregators.staleness import Staleness
from lightning_asyncfl.callbacks.base import Callback
from lightning_asyncfl.context import SetupContext
from lightning_asyncfl.errors import InvalidValue, checking
from lightning_asyncfl.privacy.accounting import UserLevelAccountant
from lightning_asyncfl.privacy.compression import Compressor
from lightning_asyncfl.privacy.dp import UserLevelDP, clip_to_norm, gaussian_noise
from lightning_asyncfl.privacy.secagg import SecureAggregation, exchange_bytes
from lightning_asyncfl.state import ClientUpdate, Job, ModelState

if TYPE_CHECKING:
    from lightning_asyncfl.aggregators.base import AsyncAggregator
    from lightning_asyncfl.view import LoopView

#: seeded streams (see :mod:`lightning_asyncfl.seeding`) of DP noise and of compression's coin flips
DP_STREAM = 20
COMPRESSION_STREAM = 21

#: why an aggregation is refused: the reason counted in ``summary.json``'s ``rejected``
BUDGET_SPENT = "privacy_budget"
TOO_FEW_SURVIVORS = "secagg_threshold"


def coefficient(aggregator: Any, update: ClientUpdate) -> float:
    """The (relative) weight a linear aggregator gives ``update``'s delta: its staleness weight
    (if the aggregator has a ``staleness`` function) times its samples (if it is ``weighted``)."""
    staleness = getattr(aggregator, "staleness", None)
    c = staleness.weight(update.staleness) if isinstance(staleness, Staleness) else 1.0
    if getattr(aggregator, "weighted", False):
        c *= update.num_samples
    return float(c)


def with_delta(update: ClientUpdate, delta: Tensor, staleness: int | None = None) -> ClientUpdate:
    """A transient copy of ``update`` whose delta is ``delta`` exactly (its state base + delta)."""
    out = ClientUpdate(job=update.job, state=update.base.with_flat(update.base.flat + delta), base=update.base,
                       num_samples=update.num_samples, metrics=update.metrics,
                       staleness=update.staleness if staleness is None else staleness)  # fmt: skip
    out.__dict__["delta"] = delta  # functools.cached_property: the exact vector, not (base + delta) − base
    return out


class UploadChannel(Callback):
    """Compression, user-level DP and secure aggregation of client uploads.

    Args:
        compression: the upload compressor (None: none).
        dp: user-level differential privacy (None: none).
        secagg: secure aggregation over each buffer (None: none).
    """

    def __init__(self, *, compression: Compressor | None = None, dp: UserLevelDP | None = None,
                 secagg: SecureAggregation | None = None) -> None:
        self.compression = compression if compression is not None else Compressor()
        self.dp, self.secagg = dp, secagg
        self.accountant = UserLevelAccountant(dp.delta) if dp is not None else None
        self.seed = 0
        self.cohort = 1
        self.residuals: dict[int, Tensor] = {}  # error feedback: each client's e, on the CPU
        self.max_norm = 0.0  # largest norm of a delta the server received after clipping (DP)
        self.uploads = 0
        self._dropped: list[int] = []  # jobs of the open SecAgg cohort that will send nothing
        self.epsilons: list[tuple[int, float]] = []  # (version, ε) after every aggregation
        self.example_dp: Any = None  # (DPSGD, batch size, samples per client) with client_algorithm=dpsgd
        self._view: Any = None  # the loop's view: its client states hold DP-SGD's steps per client

    @property
    def passthrough(self) -> bool:
        """Whether updates reach the aggregator untouched (no option set)."""
        return self.compression.identity and not self.compression.error_feedback and self.dp is None and self.secagg is None

    def setup(self, context: SetupContext, aggregator: AsyncAggregator | None = None) -> None:
        """Check that the options compose with ``aggregator``; take the run's seed."""
        from lightning_asyncfl.aggregators import FedAsync, FedAvg, FedBuff, FedOpt, Scaffold

        #: aggregators linear in each delta with the coefficients of :func:`coefficient` (FedOpt's
        #: optimizers post-process the noised mean); the others weigh a delta by its own value
        #: (AsyncFedED), reuse it in later versions (CA2FL's cache) or add unclipped tensors (SCAFFOLD)
        central_ok = (FedAsync, FedAvg, FedBuff, FedOpt)

        self.seed = context.seed
        if aggregator is None:
            return
        self.cohort = int(getattr(aggregator, "buffer_size", 1))
        name = type(aggregator).__name__
        reducer = getattr(aggregator, "reducer", None)
        linear = reducer is None or reducer.is_plain_mean  # a plain (weighted) mean: noise and masks stay calibrated
        with checking() as check:
            if self.dp is not None and self.dp.mode == "central":
                check(linear and isinstance(aggregator, central_ok), "dp.mode", "central",
                      f"local with {name} (reducer={reducer!r}): central noise is calibrated to a linear "
                      "combination of the deltas: FedAsync, FedBuff, FedAvg or a FedOpt (fedavgm, fedadam, ...) with reducer=mean")
            if self.dp is not None:
                check(not isinstance(aggregator, Scaffold), "dp", repr(self.dp), f"used without SCAFFOLD (its control variates are neither clipped nor noised), got {name}")
            if self.secagg is not None:
                ok = isinstance(aggregator, FedBuff) and linear and aggregator.buffer_size >= 2
                check(ok, "secagg", repr(self.secagg), f"used with a FedBuff aggregator with reducer=mean and buffer_size >= 2 "
                      f"(a masked sum of several deltas), got {aggregator!r}")
                check(self.compression.identity, "secagg", repr(self.secagg), f"used without compression (masked inputs are dense ring elements), got {self.compression!r}")

    # -- bytes -------------------------------------------------------------------------
    def model_upload_bytes(self, base: ModelState) -> int:
        """Bytes of the model part of an upload from ``base``: the compressed or masked delta,
        SecAgg's key and share exchange (a cohort of ``buffer_size``), the integer buffers."""
        numel, size = base.flat.numel(), base.flat.element_size()
        extras = sum(t.numel() * t.element_size() for t in base.extras.values())
        if self.secagg is not None:
            return self.secagg.payload_bytes(numel) + exchange_bytes(self.cohort) + extras
        return self.compression.payload_bytes(numel, size) + extras

    # -- the client side ---------------------------------------------------------------
    def on_upload(self, update: ClientUpdate) -> ClientUpdate:
        """The update as the server receives it (see the module docstring); ``update`` itself when nothing applies."""
        if self.passthrough or update.state.flat.shape != update.base.flat.shape or update.state.flat.dtype != update.base.flat.dtype:
            return update
        job, device = update.job, update.base.flat.device
        x = delta = update.state.flat - update.base.flat
        client = job.client_id
        if self.compression.error_feedback and client in self.residuals:
            x = x + self.residuals[client].to(device)
        dp = self.dp
        if dp is not None:
            x = clip_to_norm(x, dp.clip_norm)
            if dp.mode == "local" and dp.clip_norm is not None:  # the client's clipped delta, before its noise
                self.max_norm = max(self.max_norm, float(torch.linalg.vector_norm(x)))
            if dp.mode == "local":
                if dp.noise_std > 0:
                    gen = torch.Generator().manual_seed(seeding.derive_seed(self.seed, DP_STREAM, 0, job.job_id))
                    x = x + gaussian_noise(x.shape, dp.noise_std, gen, x.dtype).to(device)
                self.accountant.step({client: dp.noise_multiplier})
        sent = x
        if not self.compression.identity:
            gen = torch.Generator().manual_seed(seeding.derive_seed(self.seed, COMPRESSION_STREAM, job.job_id))
            sent = self.compression.roundtrip(x, gen)
        if self.compression.error_feedback and bool(torch.isfinite(x).all()):
            self.residuals[client] = (x - sent).cpu()
        if dp is not None and dp.mode == "central":
            sent = clip_to_norm(sent, dp.clip_norm)
        if dp is not None and dp.mode == "central" and dp.clip_norm is not None:
            self.max_norm = max(self.max_norm, float(torch.linalg.vector_norm(sent)))
        self.uploads += 1
        if sent is delta:  # nothing clipped, noised or compressed: the update itself, bit for bit
            return update
        return ClientUpdate(job=job, state=update.state.with_flat(update.base.flat + sent), base=update.base,
                            num_samples=update.num_samples, metrics=update.metrics, staleness=update.staleness)  # fmt: skip

    # -- the server side ---------------------------------------------------------------
    def aggregate(self, aggregator: AsyncAggregator, global_state: ModelState, updates: Sequence[ClientUpdate], version: int) -> ModelState | str:
        """The next global model, or the reason the aggregation is refused
        (:data:`BUDGET_SPENT`, :data:`TOO_FEW_SURVIVORS`)."""
        if self.dp is None and self.secagg is None:
            return aggregator.aggregate(global_state, updates, version)
        updates = list(updates)
        dp = self.dp
        if dp is not None:
            releases = self._central_releases(aggregator, updates) if dp.mode == "central" else {}
            spent = self.accountant.epsilon_after(releases)
            if dp.target_epsilon is not None and spent > dp.target_epsilon:
                return BUDGET_SPENT
        if self.secagg is not None:
            pooled = self._secure_mean(aggregator, updates)
            if pooled is None:
                return TOO_FEW_SURVIVORS
            updates = pooled
        if dp is not None:
            if dp.mode == "central":
                self.accountant.step(releases)
                if dp.noise_std > 0:
                    updates = self._add_central_noise(aggregator, updates, version)
            self.epsilons.append((version + 1, self.accountant.epsilon))
        return aggregator.aggregate(global_state, updates, version)

    def _central_releases(self, aggregator: AsyncAggregator, updates: Sequence[ClientUpdate]) -> dict[int, float]:
        """{client: noise multiplier} of one central release: z · c_max / Σ_{its updates} c_i."""
        coeffs = [coefficient(aggregator, u) for u in updates]
        c_max = max(coeffs)
        share: dict[int, float] = {}
        for u, c in zip(updates, coeffs):
            share[u.client_id] = share.get(u.client_id, 0.0) + c
        z = self.dp.noise_multiplier
        return {client: (z if s == c_max else z * c_max / s) if s > 0 else math.inf for client, s in share.items()}

    def _add_central_noise(self, aggregator: AsyncAggregator, updates: list[ClientUpdate], version: int) -> list[ClientUpdate]:
        """N(0, z²C²) added to the delta of the update of largest coefficient (the first of equals)."""
        coeffs = [coefficient(aggregator, u) for u in updates]
        i = coeffs.index(max(coeffs))
        target = updates[i]
        gen = torch.Generator().manual_seed(seeding.derive_seed(self.seed, DP_STREAM, 1, version, updates[0].job_id))
        noise = gaussian_noise(target.delta.shape, self.dp.noise_std, gen, target.delta.dtype).to(target.delta.device)
        return [*updates[:i], with_delta(target, target.delta + noise), *updates[i + 1 :]]

    def _secure_mean(self, aggregator: AsyncAggregator, updates: list[ClientUpdate]) -> list[ClientUpdate] | None:
        """K copies of (1/K) Σ s(τ_i) Δ_i, the sum computed from masked inputs only, each with staleness 0
        (so that the aggregator's own weight is s(0) = 1); None when too few of the cohort survived."""
        inputs = {u.job_id: u.delta * coefficient(aggregator, u) for u in updates}
        dropped, self._dropped = sorted(set(self._dropped) - set(inputs)), []
        total = self.secagg.secure_sum(inputs, dropped)
        if total is None:
            return None
        like = updates[0].delta
        mean = (total / len(updates)).to(dtype=like.dtype, device=like.device)
        return [with_delta(u, mean, staleness=0) for u in updates]

    # -- callback hooks ----------------------------------------------------------------
    def on_run_start(self, loop: LoopView) -> None:
        """Keep the loop's view: DP-SGD's steps per client live in its client states."""
        self._view = loop

    def on_dropout(self, loop: LoopView, job: Job) -> None:
        """A member of the open SecAgg cohort left before sending its masked input."""
        if self.secagg is not None:
            self._dropped.append(job.job_id)

    def on_update_rejected(self, loop: LoopView, job: Job, reason: str, detail: str, update: ClientUpdate | None) -> None:
        """A rejected or failed job's input is not in the sum: SecAgg unmasks around it."""
        if self.secagg is not None:
            self._dropped.append(job.job_id)

    # -- results -----------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """Columns of every evaluation row: ``epsilon`` spent so far (with DP)."""
        out = {} if self.accountant is None else {"epsilon": self.accountant.epsilon}
        if self.example_dp is not None:
            out["epsilon_example"] = self._example_epsilon()
        return out

    def _example_epsilon(self) -> float:
        algorithm, batch_size, num_samples = self.example_dp
        return algorithm.epsilon(self._view.client_states if self._view is not None else {}, num_samples, batch_size)

    def summary(self) -> dict[str, Any]:
        """The ``privacy`` part of ``summary.json``."""
        out: dict[str, Any] = {"compression": repr(self.compression), "uploads": self.uploads}
        if self.dp is not None:
            eps = self.accountant.epsilon
            out["dp"] = {
                "mode": self.dp.mode, "clip_norm": self.dp.clip_norm, "noise_multiplier": self.dp.noise_multiplier,
                "delta": self.dp.delta, "epsilon": eps if math.isfinite(eps) else None, "target_epsilon": self.dp.target_epsilon,
                "max_releases_per_client": self.accountant.max_releases, "max_received_norm": self.max_norm,
                "accountant": "opacus.accountants.RDPAccountant, sample_rate=1, user-level zero-out adjacency",
                "epsilon_by_version": [[v, e if math.isfinite(e) else None] for v, e in self.epsilons],
            }  # fmt: skip
        if self.example_dp is not None:
            eps, algorithm = self._example_epsilon(), self.example_dp[0]
            out["dpsgd"] = {"epsilon": eps if math.isfinite(eps) else None, "delta": algorithm.delta, "noise_multiplier": algorithm.noise_multiplier,
                            "max_grad_norm": algorithm.max_grad_norm, "accountant": "opacus.accountants.RDPAccountant, q = batch_size / client samples, per client"}  # fmt: skip
        if self.secagg is not None:
            out["secagg"] = {"ring_bits": self.secagg.ring_bits, "fractional_bits": self.secagg.fractional_bits,
                             "clamped_coordinates": self.secagg.clamped, "exchange_bytes_per_upload": exchange_bytes(self.cohort)}  # fmt: skip
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "residuals": {c: t.clone() for c, t in sorted(self.residuals.items())},
            "accountant": None if self.accountant is None else self.accountant.state_dict(),
            "max_norm": self.max_norm, "uploads": self.uploads, "dropped": list(self._dropped),
            "epsilons": [list(e) for e in self.epsilons],
            "clamped": 0 if self.secagg is None else self.secagg.clamped,
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.residuals = {int(c): t.clone() for c, t in state["residuals"].items()}
        if self.accountant is not None and state["accountant"] is not None:
            self.accountant.load_state_dict(state["accountant"])
        self.max_norm, self.uploads = float(state["max_norm"]), int(state["uploads"])
        self._dropped = [int(j) for j in state["dropped"]]
        self.epsilons = [(int(v), float(e)) for v, e in state["epsilons"]]
        if self.secagg is not None:
            self.secagg.clamped = int(state["clamped"])

    def __repr__(self) -> str:
        return f"UploadChannel(compression={self.compression!r}, dp={self.dp!r}, secagg={self.secagg!r})"


def check_compression(compression: Any) -> Compressor:
    """``compression`` if it is a Compressor, else InvalidValue naming the target."""
    if not isinstance(compression, Compressor):
        raise InvalidValue("_target_", type(compression).__name__, "a lightning_asyncfl.privacy.Compressor")
    return compression
