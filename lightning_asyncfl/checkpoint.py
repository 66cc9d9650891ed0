"""Checkpoints: the whole run state on disk, written atomically, loaded with ``weights_only``.

A checkpoint holds everything the loop needs to continue as if it had never stopped:
global weights and version, the virtual clock, the aggregator's and scheduler's state,
every random stream, the jobs in flight with the model versions they started from, the
buffer, the counters, the metrics so far and each callback's state (the byte length of
``metrics.csv`` and ``updates.csv``). Only tensors and plain values are stored, so
``torch.load(path, weights_only=True)`` reads it.

Writing is atomic: the checkpoint goes to a temporary file in the same directory, is
flushed and fsynced, then renamed over its final name, so a kill at any moment leaves
the previous checkpoint valid. The last ``keep_last`` are kept.

Every checkpoint carries a checksum of its content (tensors byte for byte, plain values
by their ``repr``), so a flipped bit or a truncated file is detected on load, and a
checkpoint whose global weights are not finite is refused. A checkpoint is data: a
resumed run never instantiates the config stored in it (see ``resume.resume_config``).
"""

from __future__ import annotations

import hashlib
import logging
import io
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_asyncfl.errors import InvalidValue, checking
from lightning_asyncfl.state import Job, Layout, ModelState

log = logging.getLogger(__name__)

FORMAT = 1
_NAME = re.compile(r"^checkpoint-(\d+)-v(\d+)\.ckpt$")


class Checkpointer:
    """Writes checkpoints into ``directory`` every ``every_n_steps`` versions and keeps the last ``keep_last``.

    Args:
        directory: where the checkpoint files go (created when the first is written).
        every_n_steps: a checkpoint every this many global versions (null: only at the
            end, on Ctrl-C and on a client error that stops the run).
        keep_last: how many checkpoints to keep (older ones are deleted once a newer one
            is safely on disk).
        meta: plain values stored in every checkpoint beside the run state (the run's config).
    """

    def __init__(self, directory: str | Path, *, every_n_steps: int | None = 100, keep_last: int = 2, meta: Mapping[str, Any] | None = None) -> None:
        with checking() as check:
            check(every_n_steps is None or (isinstance(every_n_steps, int) and not isinstance(every_n_steps, bool) and every_n_steps >= 1),
                  "every_n_steps", every_n_steps, "null or an integer >= 1")  # fmt: skip
            check(isinstance(keep_last, int) and not isinstance(keep_last, bool) and keep_last >= 1, "keep_last", keep_last, "an integer >= 1")
        self.directory = Path(directory)
        self.every_n_steps = every_n_steps
        self.keep_last = keep_last
        self.meta = dict(meta or {})

    def due(self, version: int, last_version: int | None) -> bool:
        """Whether ``version`` is a multiple of ``every_n_steps`` not yet checkpointed."""
        return self.every_n_steps is not None and version % self.every_n_steps == 0 and version != last_version

    def save(self, state: Mapping[str, Any], version: int) -> Path:
        """Write ``state`` atomically as the next checkpoint; delete those beyond ``keep_last``."""
        self.directory.mkdir(parents=True, exist_ok=True)
        existing = list_checkpoints(self.directory)
        number = existing[-1][0] + 1 if existing else 0
        path = self.directory / f"checkpoint-{number:05d}-v{version}.ckpt"
        payload = {"format": FORMAT, **self.meta, **state}
        write_atomic(path, {**payload, "checksum": checksum(payload)})
        for _, old in [*existing, (number, path)][: -self.keep_last]:
            old.unlink(missing_ok=True)
        log.info("checkpoint at version %d: %s", version, path)
        return path

    def __repr__(self) -> str:
        return f"Checkpointer({str(self.directory)!r}, every_n_steps={self.every_n_steps}, keep_last={self.keep_last})"


def write_atomic(path: Path, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` through a fsynced temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        data = io.BytesIO()
        torch.save(obj, data)  # serialised first: a full disk is then Python's OSError (ENOSPC), not torch's "unexpected pos"
        with tmp.open("wb") as f:
            f.write(data.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, a kill: no half-written file stays behind
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """``(number, path)`` of the checkpoints in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def checkpoints_in(path: str | Path) -> list[Path]:
    """The checkpoints of a run directory (``<run>/checkpoints/``) or of a checkpoint directory, newest first."""
    path = Path(path)
    for directory in (path / "checkpoints", path):
        found = list_checkpoints(directory)
        if found:
            return [p for _, p in reversed(found)]
    return []


def find_checkpoint(path: str | Path) -> Path | None:
    """The checkpoint ``path`` names: the file itself, or the latest in a run directory
    (``<run>/checkpoints/``) or in a checkpoint directory; None if there is none."""
    path = Path(path)
    if path.is_file():
        return path
    found = checkpoints_in(path)
    return found[0] if found else None


def checksum(obj: Any) -> str:
    """A digest of ``obj``'s content: tensors byte for byte (with dtype and shape), plain values by ``repr``."""
    digest = hashlib.blake2b(digest_size=16)

    def feed(item: Any) -> None:
        if isinstance(item, torch.Tensor):
            tensor = item.detach().cpu().contiguous().reshape(-1)
            digest.update(f"T{tensor.dtype}{tuple(item.shape)}:".encode())
            digest.update(memoryview(tensor.view(torch.uint8).numpy()))
        elif isinstance(item, Mapping):
            digest.update(b"{")
            for key, value in item.items():
                feed(key)
                feed(value)
            digest.update(b"}")
        elif isinstance(item, (list, tuple)):
            digest.update(b"[" if isinstance(item, list) else b"(")
            for value in item:
                feed(value)
            digest.update(b"]")
        else:
            digest.update(f"{type(item).__name__}:{item!r};".encode())

    feed(obj)
    return digest.hexdigest()


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``; a clear error for anything else.

    Raises:
        InvalidValue: the file is not a checkpoint (unreadable, truncated, holding more
            than tensors and plain values, another format), its content does not match its
            checksum, or its global weights are not finite.
    """
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as error:
        raise InvalidValue("resume", str(path), f"a checkpoint written by lightning_asyncfl ({type(error).__name__}: {error})") from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InvalidValue("resume", str(path), f"a checkpoint of format {FORMAT}")
    stored = state.pop("checksum", None)
    if stored is not None and stored != checksum(state):
        raise InvalidValue("resume", str(path), "a checkpoint whose content matches its checksum (this file is damaged: a flipped bit or a partial copy)")
    flat = state.get("global", {}).get("flat") if isinstance(state.get("global"), Mapping) else None
    if isinstance(flat, torch.Tensor) and flat.is_floating_point() and not bool(torch.isfinite(flat).all()):
        raise InvalidValue("resume", str(path), "a checkpoint with finite global weights (its global weights hold NaN or infinite values)")
    return state


# -- plain values <-> run objects ---------------------------------------------------------


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """A NumPy generator's state as plain values."""
    return rng.bit_generator.state


def set_rng_state(rng: np.random.Generator, state: Mapping[str, Any]) -> None:
    """Put ``rng`` back into the state :func:`rng_state` returned."""
    rng.bit_generator.state = dict(state)


# the plain forms live on the types (state.py); these names stay for code that imported them
def layout_to_plain(layout: Layout) -> dict[str, Any]:
    return layout.to_plain()


def layout_from_plain(plain: Mapping[str, Any]) -> Layout:
    return Layout.from_plain(plain)


def model_state_to_plain(state: ModelState) -> dict[str, Any]:
    """A ModelState's tensors (moved to the CPU) without its layout, which is stored once."""
    return state.to_plain(layout=False)


def model_state_from_plain(plain: Mapping[str, Any], layout: Layout, device: torch.device | str = "cpu") -> ModelState:
    return ModelState.from_plain(plain, layout, device)


def job_to_plain(job: Job) -> dict[str, Any]:
    return job.to_plain()


def job_from_plain(plain: Mapping[str, Any]) -> Job:
    return Job.from_plain(plain)
