"""SCAFFOLD (client side): local steps corrected by control variates.

Karimireddy, Kale, Mohri, Reddi, Stich, Suresh. "SCAFFOLD: Stochastic Controlled Averaging
for Federated Learning", ICML 2020, https://arxiv.org/abs/1910.06378, Algorithm 1. Client
i receives the server model x and control variate c, keeps its own c_i, and runs K steps

    y_i ← y_i − η_l (g_i(y_i) − c_i + c)

implemented as the loss term <c − c_i, y_i>, whose gradient is exactly c − c_i. Then
(option II)

    c_i⁺ = c_i − c + (x − y_i) / (K η_l),      Δc_i = c_i⁺ − c_i

and Δy_i = y_i − x (the update's delta) and Δc_i (``side["control_delta"]``) go to the
server (:class:`lightning_asyncfl.aggregators.Scaffold`). c_i is the client's own state
(``ctx.client_state["control"]``): the loop keeps it between the client's jobs, so memory
grows with the number of clients that have participated (one parameter-sized vector each),
and it reaches whichever worker trains the client next.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_asyncfl.client_algorithms.base import ClientAlgorithm, LocalTraining
from lightning_asyncfl.state import ModelState


class Scaffold(ClientAlgorithm):
    """SCAFFOLD's client: control-variate-corrected local SGD and option II's c_i update."""

    def before_training(self, ctx: LocalTraining) -> None:
        size = ctx.base.layout.parameter_size
        zeros = torch.zeros(size, dtype=ctx.base.flat.dtype, device=ctx.base.flat.device)
        self._c = ctx.base.side.get("control", zeros)
        self._c_i = ctx.client_state.get("control", zeros)
        self._corrections = ctx.base.layout.parameter_views(self._c - self._c_i)
        self._parameters = ctx.parameters

    def on_loss(self, ctx: LocalTraining, loss: Tensor) -> Tensor:
        return loss + sum((p * c).sum() for p, c in zip(self._parameters, self._corrections))

    def after_training(self, ctx: LocalTraining) -> dict[str, Tensor]:
        size = ctx.base.layout.parameter_size
        if ctx.steps == 0:  # no data: nothing learnt, c_i unchanged
            return {"control_delta": torch.zeros_like(self._c)}
        x, y = ctx.base.flat[:size], ctx.flat[:size]
        c_i_new = self._c_i - self._c + (x - y) / (ctx.steps * ctx.lr)
        ctx.client_state["control"] = c_i_new
        return {"control_delta": c_i_new - self._c_i}

    def upload_side_bytes(self, base: ModelState) -> int:
        """Δc_i: one parameter-sized vector at the model's dtype."""
        return base.layout.parameter_size * base.flat.element_size()

    def __repr__(self) -> str:
        return "Scaffold()"
