"""CharLSTM: LEAF's Shakespeare next-character model (a stacked LSTM).

Caldas et al. "LEAF: A Benchmark for Federated Settings", 2018,
https://arxiv.org/abs/1812.01097, and LEAF's ``models/shakespeare/stacked_lstm.py``
(also the Shakespeare model of FedProx, Li et al. 2020, https://arxiv.org/abs/1812.06127,
and of McMahan et al. 2017, https://arxiv.org/abs/1602.05629): each character id of the
80-character input is embedded in 8 dimensions, two LSTM layers of 256 units read the
sequence, and a linear layer maps the last step's output to the logits of the next
character:

    e_t = E[x_t],   (h_t, c_t) = LSTM_2(LSTM_1(e_t)),   logits = W h_L + b

The inputs are int64 token ids of shape ``(batch, L)``; the outputs ``(batch, num_classes)``.
``validation_step`` logs the next-token accuracy (torchmetrics' micro multiclass accuracy
of the predicted next character). The batched executor trains it one client at a time
(recurrent layers do not run under ``torch.func.vmap``).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lightning_asyncfl.errors import checking
from lightning_asyncfl.models.base import ClassifierModule


class CharLSTM(ClassifierModule):
    """LEAF's stacked character LSTM for inputs of shape ``(sequence length,)`` (int64 ids).

    Args:
        vocab_size: the number of token ids; ``None``: ``num_classes`` (next-token
            prediction over the same vocabulary).
        embedding_dim: the size of a character's embedding (LEAF: 8).
        hidden: the units of each LSTM layer (LEAF: 256).
        num_layers: the stacked LSTM layers (LEAF: 2).
        **kwargs: :class:`ClassifierModule`'s arguments (input_shape, num_classes, lr, ...).
    """

    def __init__(
        self, *, vocab_size: int | None = None, embedding_dim: int = 8, hidden: int = 256, num_layers: int = 2, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        vocab = self.num_classes if vocab_size is None else vocab_size
        with checking() as check:
            check(len(self.input_shape) == 1, "input_shape", list(self.input_shape), "[sequence length] (a 1-D sequence of token ids)")
            for key, value in (("vocab_size", vocab), ("embedding_dim", embedding_dim), ("hidden", hidden), ("num_layers", num_layers)):
                check(isinstance(value, int) and not isinstance(value, bool) and value >= 1, key, value, "an integer >= 1")
        self.vocab_size = int(vocab)
        self.embedding = nn.Embedding(self.vocab_size, int(embedding_dim))
        self.lstm = nn.LSTM(int(embedding_dim), int(hidden), num_layers=int(num_layers), batch_first=True)
        self.head = nn.Linear(int(hidden), self.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.lstm(self.embedding(x))
        return self.head(out[:, -1])
