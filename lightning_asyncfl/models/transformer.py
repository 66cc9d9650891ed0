"""Transformer: a small Transformer over token ids, predicting the next token (or a class).

Vaswani et al. "Attention Is All You Need", NeurIPS 2017, https://arxiv.org/abs/1706.03762,
with the pre-norm layers of Xiong et al. 2020 (https://arxiv.org/abs/2002.04745) built by
``torch.nn.TransformerEncoderLayer(norm_first=True)``: token embedding plus a learned
position embedding, ``num_layers`` self-attention layers, a final LayerNorm, and a
linear layer on the last position:

    h_0 = E[x] + P,   h_l = Layer_l(h_{l-1}, mask),   logits = W LN(h_L)[last] + b

With ``causal: true`` position t attends to positions <= t (a decoder-only language
model; the last position sees the whole sequence, so the prediction is that of the next
token), with ``causal: false`` to every position (an encoder classifier). Positions
holding ``pad_index`` (left padding of short texts) are masked as keys.

The inputs are int64 token ids ``(batch, L)``; the outputs ``(batch, num_classes)``;
``validation_step`` logs the next-token (or class) accuracy through torchmetrics.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_asyncfl.errors import checking
from lightning_asyncfl.models.base import ClassifierModule


class Transformer(ClassifierModule):
    """A pre-norm Transformer for inputs of shape ``(sequence length,)`` (int64 ids).

    Args:
        vocab_size: the number of token ids; ``None``: ``num_classes``.
        d_model: the width of the embeddings and layers.
        nhead: attention heads; must divide ``d_model``.
        num_layers: Transformer layers.
        dim_feedforward: the hidden width of each layer's feed-forward block.
        dropout: dropout probability inside the layers.
        causal: each position attends only to itself and earlier positions.
        pad_index: a token id that is padding (masked as a key), or ``None``.
        **kwargs: :class:`ClassifierModule`'s arguments (input_shape, num_classes, lr, ...).
    """

    def __init__(
        self,
        *,
        vocab_size: int | None = None,
        d_model: int = 64,
        nhead: int = 4,
        num_layers: int = 2,
        dim_feedforward: int = 256,
        dropout: float = 0.0,
        causal: bool = True,
        pad_index: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        vocab = self.num_classes if vocab_size is None else vocab_size
        ints = (("vocab_size", vocab), ("d_model", d_model), ("nhead", nhead), ("num_layers", num_layers), ("dim_feedforward", dim_feedforward))
        with checking() as check:
            check(len(self.input_shape) == 1, "input_shape", list(self.input_shape), "[sequence length] (a 1-D sequence of token ids)")
            for key, value in ints:
                check(isinstance(value, int) and not isinstance(value, bool) and value >= 1, key, value, "an integer >= 1")
            if all(isinstance(v, int) and v >= 1 for _, v in ints):
                check(d_model % nhead == 0, "nhead", nhead, f"a divisor of d_model ({d_model})")
                check(pad_index is None or (isinstance(pad_index, int) and 0 <= pad_index < vocab), "pad_index", pad_index, f"null or a token id in [0, {vocab})")
            check(isinstance(dropout, (int, float)) and 0 <= dropout < 1, "dropout", dropout, "in [0, 1)")
            check(isinstance(causal, bool), "causal", causal, "true or false")
        self.vocab_size, self.causal, self.pad_index = int(vocab), causal, pad_index
        length = self.input_shape[0]
        self.embedding = nn.Embedding(self.vocab_size, d_model)
        self.position = nn.Parameter(torch.zeros(length, d_model))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, self.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[1]
        h = self.embedding(x) + self.position[:length]
        mask = nn.Transformer.generate_square_subsequent_mask(length, device=x.device, dtype=h.dtype) if self.causal else None
        padding = None
        if self.pad_index is not None:  # never mask the last position: a row of padding only still has one key
            padding = (x == self.pad_index) & (torch.arange(length, device=x.device) < length - 1)
            padding = torch.zeros_like(h[..., 0]).masked_fill(padding, float("-inf"))
        h = self.layers(h, mask=mask, src_key_padding_mask=padding, is_causal=False)
        return self.head(self.norm(h[:, -1]))
