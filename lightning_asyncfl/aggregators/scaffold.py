"""SCAFFOLD (server side): average the deltas, move the server control variate.

Karimireddy, Kale, Mohri, Reddi, Stich, Suresh. "SCAFFOLD: Stochastic Controlled Averaging
for Federated Learning", ICML 2020, https://arxiv.org/abs/1910.06378, Algorithm 1, lines
16-17. With the sampled clients S of a round, N clients in all and global step size η_g:

    x ← x + (η_g / |S|) Σ_{i∈S} Δy_i
    c ← c + (1 / N) Σ_{i∈S} Δc_i

Δy_i is the update's delta; Δc_i arrives as ``update.state.side["control_delta"]``, made
by the client side :class:`lightning_asyncfl.client_algorithms.Scaffold`. The new c goes
to the next clients as ``global_state.side["control"]`` (it starts at 0). The preset
``server=scaffold`` selects both halves.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_asyncfl.aggregators.base import AsyncAggregator
from lightning_asyncfl.aggregators.ops import weighted_sum
from lightning_asyncfl.context import SetupContext, clients_of_run
from lightning_asyncfl.errors import checking, positive, positive_int, validate
from lightning_asyncfl.state import ClientUpdate, ModelState


def scaffold_step(
    x: Tensor, c: Tensor, deltas: Sequence[Tensor], control_deltas: Sequence[Tensor], num_clients: int, server_lr: float
) -> tuple[Tensor, Tensor]:
    """(x + η_g/|S| Σ Δy_i, c + 1/N Σ Δc_i)."""
    dy, dc = weighted_sum(deltas), weighted_sum(control_deltas)
    return x.add(dy, alpha=server_lr / len(deltas)), c.add(dc, alpha=1.0 / num_clients)


class Scaffold(AsyncAggregator):
    """SCAFFOLD's server with ``clients_per_round`` updates per round.

    Args:
        clients_per_round: |S|, aggregate when this many updates are buffered.
        num_clients: N, the number of clients. None (the default): the run's number of
            clients, learnt in :meth:`setup`; a value given must equal it.
        server_lr: η_g > 0.
    """

    def __init__(self, *, clients_per_round: int = 10, num_clients: int | None = None, server_lr: float = 1.0) -> None:
        with checking() as check:
            super().__init__(buffer_size=clients_per_round)
            if num_clients is not None:  # else from the run (setup)
                validate(check, positive_int, "num_clients", num_clients)
            validate(check, positive, "server_lr", server_lr)
        self.num_clients, self.server_lr = num_clients, float(server_lr)

    def setup(self, context: SetupContext) -> None:
        self.num_clients = clients_of_run("num_clients", self.num_clients, context)

    def aggregate(self, global_state: ModelState, updates: Sequence[ClientUpdate], version: int) -> ModelState:
        if self.num_clients is None:
            raise RuntimeError("Scaffold needs num_clients: give it, or call setup(context) first")
        size = global_state.layout.parameter_size
        missing = [u.job_id for u in updates if "control_delta" not in u.state.side]
        if missing:
            raise ValueError(f"SCAFFOLD updates need side['control_delta'] (client_algorithm=scaffold); jobs {missing} have none")
        c = global_state.side.get("control", torch.zeros(size, dtype=global_state.flat.dtype, device=global_state.flat.device))
        x, c = scaffold_step(global_state.flat, c, [u.delta for u in updates], [u.state.side["control_delta"] for u in updates], self.num_clients, self.server_lr)
        return global_state.with_flat(x).with_side(control=c)

    def __repr__(self) -> str:
        return f"Scaffold(clients_per_round={self.buffer_size}, num_clients={self.num_clients}, server_lr={self.server_lr})"
