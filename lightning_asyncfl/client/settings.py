"""The ``client`` config keys a :class:`~lightning_asyncfl.client.ClientTrainer` takes, and their checks.

:func:`check_client_settings` reports every bad key at once; a run calls it before
building anything, and every trainer calls it again on its own arguments.
"""

from __future__ import annotations

from lightning_asyncfl.errors import checking, require_choice
from lightning_asyncfl.job_trainer import GRADIENT_CLIP_ALGORITHMS


ACCELERATORS = ["cpu", "cuda", "gpu", "mps", "auto"]
PRECISIONS = ["32-true", "32", "bf16-mixed", "16-mixed"]  # mixed precision keeps float32 data and weights


def check_client_settings(
    *, epochs: int = 1, batch_size: int = 32, accelerator: str = "cpu", precision: str = "32-true",
    accumulate_grad_batches: int = 1, gradient_clip_val: float | None = None, gradient_clip_algorithm: str = "norm",
    keep_optimizer_state: bool = False,
) -> None:  # fmt: skip
    """Raise :class:`InvalidValue` (or several) for every client setting outside what is allowed."""
    with checking() as check:
        check(isinstance(epochs, int) and epochs >= 1, "epochs", epochs, "an integer >= 1")
        check(isinstance(batch_size, int) and batch_size >= 1, "batch_size", batch_size, "an integer >= 1")
        check(accelerator in ACCELERATORS, "accelerator", accelerator, "one of: " + ", ".join(ACCELERATORS))
        require_choice("precision", str(precision), PRECISIONS)
        check(isinstance(accumulate_grad_batches, int) and not isinstance(accumulate_grad_batches, bool) and accumulate_grad_batches >= 1, "accumulate_grad_batches", accumulate_grad_batches, "an integer >= 1")
        check(gradient_clip_val is None or (isinstance(gradient_clip_val, (int, float)) and not isinstance(gradient_clip_val, bool) and gradient_clip_val >= 0), "gradient_clip_val", gradient_clip_val, "null or a number >= 0")
        check(gradient_clip_algorithm in GRADIENT_CLIP_ALGORITHMS, "gradient_clip_algorithm", gradient_clip_algorithm, "one of: " + ", ".join(GRADIENT_CLIP_ALGORITHMS))
        check(isinstance(keep_optimizer_state, bool), "keep_optimizer_state", keep_optimizer_state, "true or false")
