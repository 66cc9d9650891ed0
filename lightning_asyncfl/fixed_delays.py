"""Delay models with one fixed latency per client: a given table, or the stepped stale groups.

:class:`PerClientDelay` takes the latencies from a list or a file (the original framework's
``stale.txt``); :class:`SteppedDelay` draws them once per client in groups of growing
latency. Both are importable from :mod:`lightning_asyncfl.delays`, the home of
:class:`~lightning_asyncfl.delays.DelayModel` and of the config ``_target_`` paths
(``lightning_asyncfl.delays.PerClientDelay``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from lightning_asyncfl.delays import MAX_SECONDS, DelayModel, _integer, _seconds
from lightning_asyncfl.errors import InvalidValue, require

__all__ = ["PerClientDelay", "SteppedDelay"]


class _FixedPerClient(DelayModel):
    """Base of models with one fixed latency per client, computed in :meth:`_setup`."""

    def __init__(self, *, per_sample: float = 0.0) -> None:
        super().__init__(per_sample=per_sample)
        self._delays: np.ndarray | None = None

    @property
    def client_delays(self) -> np.ndarray:
        """Each client's fixed latency (a copy), known after :meth:`setup`."""
        if self._delays is None:
            name = type(self).__name__
            raise RuntimeError(f"{name}.setup(num_samples, rng) must be called first")
        return self._delays.copy()

    def _latency(self, client_id: int, rng: np.random.Generator) -> float:
        delays = self._delays
        if delays is None:  # only reachable when a subclass overrides _setup
            raise RuntimeError(f"{type(self).__name__}._setup did not set the client delays")
        return float(delays[client_id])


class PerClientDelay(_FixedPerClient):
    """A fixed latency per client, from an inline list or a file.

    The file holds one number per line, client 0 first, like the original framework's
    ``stale.txt``; blank lines are ignored. The file is read in the constructor, so a
    missing or malformed file fails before any training.

    Args:
        values: one latency per client (each >= 0).
        file: path of a text file with one latency per line. Exactly one of ``values``
            and ``file`` must be given.
        per_sample: see :class:`DelayModel`.
    """

    def __init__(
        self,
        *,
        values: Sequence[float] | None = None,
        file: str | None = None,
        per_sample: float = 0.0,
    ) -> None:
        super().__init__(per_sample=per_sample)
        if (values is None) == (file is None):
            raise InvalidValue(
                "values", f"values={values!r}, file={file!r}",
                "exactly one of values (a list, one number per client) and file "
                "(a path, one number per line) set",
            )
        self.file = None if file is None else str(file)
        if self.file is not None:
            self.values = self._read(self.file)
        else:
            if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
                raise InvalidValue("values", values, "a list of numbers >= 0, one per client")
            parsed = [_seconds(f"values[{i}]", v) for i, v in enumerate(values)]
            for i, v in enumerate(parsed):
                require(v >= 0, f"values[{i}]", v, ">= 0")
            self.values = tuple(parsed)

    @staticmethod
    def _read(path: str) -> tuple[float, ...]:
        if not os.path.isfile(path):
            raise InvalidValue("file", path, "an existing file with one number per line")
        parsed: list[float] = []
        try:
            with open(path, encoding="utf-8") as handle:
                for lineno, line in enumerate(handle, start=1):
                    text = line.strip()
                    if not text:
                        continue
                    try:
                        value = float(text)
                    except ValueError:
                        value = math.nan
                    if not (math.isfinite(value) and 0 <= value <= MAX_SECONDS):
                        raise InvalidValue(
                            "file", path,
                            f"a file with one number in [0, {MAX_SECONDS:g}] per line (line {lineno} is {text[:40]!r})",
                        )
                    parsed.append(value)
        except UnicodeDecodeError:  # a binary file
            raise InvalidValue("file", path, "a text file with one number per line") from None
        return tuple(parsed)

    def _setup(self, rng: np.random.Generator) -> None:
        n = self.num_clients
        if len(self.values) != n:
            source = f" (read from {self.file})" if self.file is not None else ""
            raise InvalidValue(
                "values", f"{len(self.values)} values{source}", f"one value per client ({n})"
            )
        self._delays = np.asarray(self.values, dtype=np.float64)

    def _repr_args(self) -> dict[str, Any]:
        shown = {"file": self.file} if self.file is not None else {"values": list(self.values)}
        return {**shown, **super()._repr_args()}


class SteppedDelay(_FixedPerClient):
    """The original framework's stepped stale groups: a fixed integer latency per client.

    Clients are split into groups. Group 0 has latency 0; each client of group ``g >= 1``
    gets one latency drawn uniformly among the nonzero integers in
    ``[(g-1)*step, g*step]`` (the original's ``random.randint(bound, bound + step)``
    redrawn while 0, with ``bound`` growing by ``step`` per group). With ``shuffle`` the
    per-client latencies are permuted, so group membership is random; otherwise clients
    ``0 .. counts[0]-1`` form group 0 and so on.

    Args:
        step: width of each group's latency range (>= 1, so every range holds a nonzero
            integer).
        counts: size of each group, group 0 first; must sum to the number of clients.
            When null, ``num_groups`` near-equal groups (``np.array_split`` order).
        num_groups: number of groups when ``counts`` is null (>= 1).
        shuffle: permute the per-client latencies with the rng.
        per_sample: see :class:`DelayModel`.
    """

    def __init__(
        self,
        *,
        step: float = 5.0,
        counts: Sequence[int] | None = None,
        num_groups: int = 4,
        shuffle: bool = True,
        per_sample: float = 0.0,
    ) -> None:
        super().__init__(per_sample=per_sample)
        self.step = _seconds("step", step)
        require(self.step >= 1, "step", step, ">= 1")
        if counts is None:
            self.counts: tuple[int, ...] | None = None
        else:
            if isinstance(counts, (str, bytes)) or not isinstance(counts, Iterable):
                raise InvalidValue("counts", counts, "a list of group sizes (integers >= 0)")
            items = list(counts)
            require(len(items) >= 1, "counts", counts, "a non-empty list of group sizes")
            self.counts = tuple(_integer(f"counts[{i}]", c) for i, c in enumerate(items))
            for i, c in enumerate(self.counts):
                require(c >= 0, f"counts[{i}]", c, ">= 0")
        self.num_groups = _integer("num_groups", num_groups)
        require(self.num_groups >= 1, "num_groups", num_groups, ">= 1")
        require(isinstance(shuffle, bool), "shuffle", shuffle, "true or false")
        self.shuffle = shuffle

    def group_sizes(self, num_clients: int) -> tuple[int, ...]:
        """Size of each group for ``num_clients`` clients, group 0 first."""
        if self.counts is not None:
            if sum(self.counts) != num_clients:
                raise InvalidValue(
                    "counts", list(self.counts),
                    f"group sizes that sum to the number of clients ({num_clients}), "
                    f"not {sum(self.counts)}",
                )
            return self.counts
        return tuple(len(part) for part in np.array_split(np.arange(num_clients), self.num_groups))

    def _setup(self, rng: np.random.Generator) -> None:
        delays: list[int] = []
        for group, size in enumerate(self.group_sizes(self.num_clients)):
            if group == 0:
                delays.extend([0] * size)
                continue
            low = max(1, math.ceil((group - 1) * self.step))
            high = math.floor(group * self.step)
            delays.extend(int(d) for d in rng.integers(low, high, size=size, endpoint=True))
        values = np.asarray(delays, dtype=np.float64)
        self._delays = rng.permutation(values) if self.shuffle else values

    def _repr_args(self) -> dict[str, Any]:
        counts = None if self.counts is None else list(self.counts)
        return {"step": self.step, "counts": counts, "num_groups": self.num_groups,
                "shuffle": self.shuffle, **super()._repr_args()}
