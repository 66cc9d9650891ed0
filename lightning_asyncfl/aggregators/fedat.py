"""FedAT: synchronous FedAvg rounds inside tiers of similar speed, asynchronous across tiers.

Chai, Chen, Anwar, Zhao, Cheng, Rangwala. "FedAT: A High-Performance and Communication-
Efficient Federated Learning System with Asynchronous Tiers", SC 2021,
https://arxiv.org/abs/2010.05958. The clients are split by response latency into M tiers,
tier_1 the fastest and tier_M the slowest. Inside a tier training is synchronous: a round
of the tier's selected clients k (n_k samples each) gives the tier model

    w_tier_m = Σ_k (n_k / n) w_k,   n = Σ_k n_k

Across tiers it is asynchronous: whenever a tier finishes a round its update count
T_tier_m grows by one and the global model becomes the weighted average of the latest tier
models, each tier weighted by the count of its mirror tier, so that the slower tiers, which
update less often, weigh more (the paper's straggler-aware weighted aggregation, from the
server objective f(w) = Σ_m (T_tier_(M+1-m) / T) f_tier_m(w)):

    w = Σ_{m=1}^{M} (T_tier_(M+1-m) / T) · w_tier_m,   T = Σ_{m=1}^{M} T_tier_m

How it runs here (one object is both the aggregator and the scheduler, so the tiers are
shared state; the preset sets ``scheduler: null``):

- Profiling: at the start every client is dispatched once from the initial model and its
  latency (arrival − dispatch, virtual seconds) is recorded. When all have arrived the
  clients are sorted by (latency, id) and cut into M tiers of equal size, fastest first
  (the first N mod M tiers one client larger). The profiling updates are not wasted: their
  sample-weighted average is the first global version, and every tier model starts as it
  (the tier models w_tier_m exist from the start, with T_tier_m = 0).
- Rounds: afterwards each tier with none of its clients in flight starts a round of
  ``min(clients_per_round, tier size)`` of its idle clients, drawn from the run's system
  stream (tiers visited fastest first), all from the current global model.
- Aggregation: :meth:`ready` holds as soon as a round whose clients have all arrived has an
  update buffered. The loop drains the whole buffer: updates of rounds still waiting for
  clients are held back and join their round when it completes; each complete round
  replaces its tier model and counts once (one with every update rejected changes
  nothing). So every global version after the first is one tier round (rarely more, when
  a round's last update was rejected); a drain with no complete round returns the global
  model unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from lightning_asyncfl.aggregators.base import AsyncAggregator
from lightning_asyncfl.aggregators.fedavg import weighted_average
from lightning_asyncfl.aggregators.ops import weighted_sum
from lightning_asyncfl.buffer import UpdateBuffer
from lightning_asyncfl.context import SetupContext
from lightning_asyncfl.errors import checking, positive_int, validate
from lightning_asyncfl.schedulers.base import Scheduler, require_at_most_clients
from lightning_asyncfl.state import ClientUpdate, Job, ModelState

log = logging.getLogger(__name__)

PROFILE = -1  # the tier index of the profiling round


def cross_tier_weights(counts: Sequence[int]) -> list[float]:
    """FedAT's weights T_tier_(M+1-m) / T of tiers m = 1..M (fastest first): the counts reversed over their sum."""
    total = sum(counts)
    if total <= 0:
        raise ValueError(f"cross-tier weights need at least one tier update, got counts {list(counts)}")
    return [count / total for count in reversed(counts)]


def tier_split(latencies: dict[int, float], num_tiers: int) -> list[list[int]]:
    """Clients sorted by (latency, id), cut into ``num_tiers`` tiers of equal size, fastest first."""
    order = sorted(latencies, key=lambda client: (latencies[client], client))
    return [sorted(int(c) for c in part) for part in np.array_split(np.array(order, dtype=np.int64), num_tiers)]


def combine(flats: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """Σ_m weights[m] · flats[m], on flat vectors (the weights already sum to 1)."""
    return weighted_sum(flats, weights)


class Held(NamedTuple):
    """What FedAT keeps of an update whose round is still training: its job, flat weights and sample count."""

    job_id: int
    flat: Tensor
    num_samples: int

    @classmethod
    def from_plain(cls, item: dict[str, Any]) -> Held:
        """A held update back from a checkpoint (one written before this type kept the whole job too)."""
        job_id = item["job_id"] if "job_id" in item else item["job"]["job_id"]
        return cls(int(job_id), torch.as_tensor(item["flat"]), int(item["num_samples"]))


class FedAT(AsyncAggregator, Scheduler):
    """FedAT with ``num_tiers`` tiers of ``clients_per_round`` clients per round.

    Args:
        num_tiers: M, the number of tiers (>= 1, <= the number of clients).
        clients_per_round: clients of one tier's round (>= 1; capped by the tier's size).
    """

    def __init__(self, *, num_tiers: int = 3, clients_per_round: int = 3) -> None:
        AsyncAggregator.__init__(self, buffer_size=1)
        Scheduler.__init__(self)
        with checking() as check:
            for key, value in (("num_tiers", num_tiers), ("clients_per_round", clients_per_round)):
                validate(check, positive_int, key, value)
        self.num_tiers, self.clients_per_round = num_tiers, clients_per_round
        self.tiers: list[list[int]] = []  # client ids of tier_1 .. tier_M, fastest first
        self.latencies: dict[int, float] = {}  # profiled latency of each client
        self.counts = [0] * num_tiers  # T_tier_m
        self.tier_models: list[Tensor] | None = None  # w_tier_m, flat
        self._profiling = False
        self._next_round = 0
        self._rounds: dict[int, tuple[int, set[int]]] = {}  # round -> (tier, clients still training)
        self._round_of_client: dict[int, int] = {}  # client in flight -> its round
        self._round_of_job: dict[int, int] = {}  # arrived job -> its round
        self._done: list[int] = []  # rounds all arrived, not yet aggregated, in completion order
        self._held: dict[int, list[Held]] = {}  # drained updates of rounds still training

    def setup(self, context: SetupContext | int) -> None:
        """One setup for both roles: the aggregator's (nothing to learn) and the scheduler's (the tiers fit the clients)."""
        if isinstance(context, SetupContext):
            AsyncAggregator.setup(self, context)
        Scheduler.setup(self, context)

    # -- scheduler -----------------------------------------------------------------
    def _setup(self, num_clients: int) -> None:
        require_at_most_clients("num_tiers", self.num_tiers, num_clients)

    def _select(self, now: float, idle: list[int], in_flight: list[int], version: int, rng: np.random.Generator) -> list[int]:
        if not self.tiers:
            if self._profiling or not idle:
                return []
            self._profiling = True
            return self._open(PROFILE, idle)
        busy = {tier for tier, waiting in self._rounds.values() if waiting}
        free = set(idle)
        chosen: list[int] = []
        for m, tier in enumerate(self.tiers):
            if m not in busy:
                picks = self._sample([c for c in tier if c in free], min(self.clients_per_round, len(tier)), rng)
                chosen += self._open(m, picks) if picks else []
        return chosen

    def _open(self, tier: int, clients: list[int]) -> list[int]:
        self._rounds[self._next_round] = (tier, set(clients))
        self._round_of_client.update((c, self._next_round) for c in clients)
        self._next_round += 1
        return clients

    def on_arrival(self, job: Job, now: float) -> None:
        """Close the job's round when it was the last one out; profile its latency."""
        rnd = self._round_of_client.pop(job.client_id, None)
        if rnd is None:
            return
        self._round_of_job[job.job_id] = rnd
        tier, waiting = self._rounds[rnd]
        waiting.discard(job.client_id)
        if tier == PROFILE:
            self.latencies[job.client_id] = job.arrival_time - job.dispatch_time
        if not waiting:
            self._done.append(rnd)
            if tier == PROFILE:
                self.tiers = tier_split(self.latencies, self.num_tiers)
                self._profiling = False
                log.info("FedAT tiers by profiled latency (fastest first): %s", self.tiers)

    # -- aggregator ----------------------------------------------------------------
    def ready(self, buffer: UpdateBuffer) -> bool:
        """Whether some round has all its clients back and an update buffered or held."""
        done = set(self._done)
        return len(buffer) > 0 and (any(r in self._held for r in done) or any(self._round_of_job.get(u.job_id) in done for u in buffer))

    def aggregate(self, global_state: ModelState, updates: Sequence[ClientUpdate], version: int) -> ModelState:
        by_round: dict[int, list[ClientUpdate]] = {}
        for update in updates:
            rnd = self._round_of_job.pop(update.job_id, None)
            if rnd is None:
                log.warning("FedAT: update of job %d (client %d) belongs to no round: ignored", update.job_id, update.client_id)
            else:
                by_round.setdefault(rnd, []).append(update)
        for rnd, held in by_round.items():
            if rnd not in self._done:
                self._held.setdefault(rnd, []).extend(Held(u.job_id, u.state.flat, u.num_samples) for u in held)
        flat, tiers_changed = global_state.flat, False
        for rnd in self._done:
            tier, _ = self._rounds.pop(rnd)
            arrived = [Held(u.job_id, u.state.flat, u.num_samples) for u in by_round.get(rnd, [])]
            members = sorted(self._held.pop(rnd, []) + arrived, key=lambda u: u.job_id)
            if not members:
                continue
            average = weighted_average([u.flat.to(flat) for u in members], [float(u.num_samples) for u in members])  # held ones may come from a checkpoint, on the CPU
            if tier == PROFILE:
                flat, self.tier_models = average, [average] * self.num_tiers
                continue
            if self.tier_models is None:
                self.tier_models = [flat] * self.num_tiers
            self.tier_models[tier] = average
            self.counts[tier] += 1
            tiers_changed = True
        self._done = []
        if tiers_changed:
            flat = combine(self.tier_models, cross_tier_weights(self.counts))
        return global_state.with_flat(flat.clone() if flat is global_state.flat else flat)

    # -- state ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Tiers, latencies, counts T_tier_m, tier models, and the rounds in flight with their held updates."""
        return {
            "tiers": [list(t) for t in self.tiers],
            "latencies": [[c, t] for c, t in sorted(self.latencies.items())],
            "counts": list(self.counts),
            "tier_models": None if self.tier_models is None else torch.stack(self.tier_models).clone(),
            "profiling": self._profiling,
            "next_round": self._next_round,
            "rounds": [[r, tier, sorted(waiting)] for r, (tier, waiting) in sorted(self._rounds.items())],
            "round_of_client": [[c, r] for c, r in sorted(self._round_of_client.items())],
            "round_of_job": [[j, r] for j, r in sorted(self._round_of_job.items())],
            "done": list(self._done),
            "held": [
                [r, [{"job_id": u.job_id, "flat": u.flat.detach().cpu(), "num_samples": u.num_samples} for u in held]]
                for r, held in sorted(self._held.items())
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        counts = [int(c) for c in state["counts"]]
        if len(counts) != self.num_tiers:
            raise ValueError(f"FedAT state has {len(counts)} tiers, this FedAT has num_tiers={self.num_tiers}")
        self.tiers = [[int(c) for c in t] for t in state["tiers"]]
        self.latencies = {int(c): float(t) for c, t in state["latencies"]}
        self.counts = counts
        models = state["tier_models"]
        self.tier_models = None if models is None else list(models.clone().unbind(0))
        self._profiling = bool(state.get("profiling", False))
        self._next_round = int(state.get("next_round", 0))
        self._rounds = {int(r): (int(tier), {int(c) for c in waiting}) for r, tier, waiting in state.get("rounds", [])}
        self._round_of_client = {int(c): int(r) for c, r in state.get("round_of_client", [])}
        self._round_of_job = {int(j): int(r) for j, r in state.get("round_of_job", [])}
        self._done = [int(r) for r in state.get("done", [])]
        self._held = {int(r): [Held.from_plain(item) for item in items] for r, items in state.get("held", [])}

    def __repr__(self) -> str:
        return f"FedAT(num_tiers={self.num_tiers}, clients_per_round={self.clients_per_round})"

