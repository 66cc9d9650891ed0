"""CA²FL: buffered asynchronous aggregation calibrated with every client's cached update.

Wang, Cao, Wu, Chen, Chen. "Tackling the Data Heterogeneity in Asynchronous Federated
Learning with Cached Update Calibration", ICLR 2024, https://openreview.net/forum?id=4aywmeb97I,
Algorithm 2 (CA²FL). The server caches the latest delta h^i of each of the N clients
(h^i_1 = 0) and their mean h_t = (1/N) Σ_{i=1..N} h^i_t. When the buffer holds the set S_t
of M deltas Δ^i_t (trained − base), it moves along the calibrated update

    v_t = h_t + (1/M) Σ_{i∈S_t} (Δ^i_t − h^i_t)
    x_{t+1} = x_t + η v_t
    h^i_{t+1} = Δ^i_t for i ∈ S_t,  h^i_{t+1} = h^i_t otherwise
    h_{t+1} = (1/N) Σ_{i=1..N} h^i_{t+1}

computed as h_{t+1} = h_t + (1/N) Σ_{i∈S_t} (Δ^i_t − h^i_t), the same mean without a pass
over all N caches. The cache is refreshed update by update in arrival order, so a client
that appears twice in one buffer is calibrated the second time against its first delta.
When the loop flushes a partial buffer, M is the number of updates actually buffered.

Memory: the server keeps one model-sized vector per client that has reported (N of them
at most), so this state grows with the number of clients, unlike FedBuff's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_asyncfl.aggregators.base import AsyncAggregator
from lightning_asyncfl.aggregators.ops import weighted_sum
from lightning_asyncfl.aggregators.server_state import FlatState
from lightning_asyncfl.context import SetupContext, clients_of_run
from lightning_asyncfl.errors import checking, positive, positive_int, validate
from lightning_asyncfl.state import ClientUpdate, ModelState


def ca2fl_step(x: Tensor, h: Tensor, deltas: Sequence[Tensor], cached: Sequence[Tensor | None], server_lr: float,
               num_clients: int) -> tuple[Tensor, Tensor]:
    """(x + η v_t, h_{t+1}) with v_t = h_t + (1/M) Σ (Δ^i − h^i) and h_{t+1} = h_t + (1/N) Σ (Δ^i − h^i).

    ``cached[k]`` is the cache h^i of the client of ``deltas[k]`` before that delta arrived
    (``None``: the client never reported, h^i = 0). New tensors; nothing is modified in place.
    """
    terms, signs = [], []
    for delta, h_i in zip(deltas, cached):
        terms.append(delta)
        signs.append(1.0)
        if h_i is not None:
            terms.append(h_i)
            signs.append(-1.0)
    calibration = weighted_sum(terms, signs)  # Σ (Δ^i − h^i), in arrival order
    v = h.add(calibration, alpha=1.0 / len(deltas))
    return x.add(v, alpha=server_lr), h.add(calibration, alpha=1.0 / num_clients)


class CA2FL(AsyncAggregator):
    """CA²FL with buffer size M, server learning rate η and N clients.

    Args:
        buffer_size: M, the number of updates per aggregation.
        server_lr: η > 0.
        num_clients: N, the number of clients h_t averages over; client ids must lie in
            [0, N). None (the default): the run's number of clients, learnt in
            :meth:`setup`; a value given must equal it.
    """

    def __init__(self, *, buffer_size: int = 10, server_lr: float = 1.0, num_clients: int | None = None) -> None:
        with checking() as check:
            validate(check, positive_int, "buffer_size", buffer_size)
            validate(check, positive, "server_lr", server_lr)
            if num_clients is not None:  # else from the run (setup)
                validate(check, positive_int, "num_clients", num_clients)
        super().__init__(buffer_size=buffer_size)
        self.server_lr, self.num_clients = float(server_lr), num_clients
        # "h": h_t (h_1 = 0), "cache.<client id>": h^i, that client's latest delta
        self._state = FlatState("CA2FL", key_rule=self._key_ok, key_hint=f"'h' and 'cache.<client id < {num_clients}>'")

    def _key_ok(self, key: str) -> bool:
        prefix, _, cid = key.partition(".")
        return key == "h" or (prefix == "cache" and cid.isdigit() and int(cid) < self.num_clients)

    def setup(self, context: SetupContext) -> None:
        self.num_clients = clients_of_run("num_clients", self.num_clients, context)

    def aggregate(self, global_state: ModelState, updates: Sequence[ClientUpdate], version: int) -> ModelState:
        x = global_state.flat
        if self.num_clients is None:
            raise RuntimeError("CA2FL needs num_clients: give it, or call setup(context) first")
        bad = sorted({u.client_id for u in updates if not 0 <= u.client_id < self.num_clients})
        if bad:
            raise ValueError(f"CA2FL has num_clients={self.num_clients}; updates came from client ids {bad}")
        state = self._state.get(x, lambda like: {"h": torch.zeros_like(like)})
        deltas, cached = [], []
        for update in updates:
            delta = update.delta.to(x)
            deltas.append(delta)
            cached.append(state.get(f"cache.{update.client_id}"))
            state[f"cache.{update.client_id}"] = delta
        flat, state["h"] = ca2fl_step(x, state["h"], deltas, cached, self.server_lr, self.num_clients)
        self._state.set(state)
        return global_state.with_flat(flat)

    def state_dict(self) -> dict[str, Any]:
        """``{"h": h_t, "cache.<client id>": h^i, ...}`` (``{}`` before the first aggregation)."""
        state = self._state.state_dict()
        return {key: state[key] for key in sorted(state, key=lambda k: (k != "h", int(k.partition(".")[2] or -1)))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state and "h" not in state:
            raise ValueError("CA2FL state has cached updates but no 'h'")
        self._state.load_state_dict(state)

    def __repr__(self) -> str:
        return f"CA2FL(buffer_size={self.buffer_size}, server_lr={self.server_lr}, num_clients={self.num_clients})"
