"""Snapshots: objects kept by key while something still uses them, counted by reference.

The loop keeps each global model version that a job in flight trains from; an executor
keeps each version's shared copy (shared memory, a Ray object reference) while a job
that needs it is queued or running. Both are this one type: :meth:`Snapshots.hold` counts
one more user of a key (making the object on first use), :meth:`Snapshots.release` one
fewer, and the last release forgets the object. It is a read-only mapping of key to
object, so ``len``, ``in``, iteration and ``==`` with a dict work as for a dict.

Not thread-safe by itself: an executor holds its own lock around it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class _Held(Generic[T]):
    __slots__ = ("obj", "count")

    def __init__(self, obj: T, count: int) -> None:
        self.obj, self.count = obj, count


class Snapshots(Mapping[K, T]):
    """Objects by key, each with the number of its users; a key without users is gone."""

    def __init__(self) -> None:
        self._held: dict[K, _Held[T]] = {}

    def hold(self, key: K, make: Callable[[], T]) -> T:
        """One more user of ``key``; ``make()`` gives the object when the key is not held yet."""
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = _Held(make(), 0)
        held.count += 1
        return held.obj

    def release(self, key: K) -> T:
        """One user fewer of ``key`` (which must be held); returns its object, forgotten after the last user."""
        held = self._held[key]
        held.count -= 1
        if held.count == 0:
            del self._held[key]
        return held.obj

    def count(self, key: K) -> int:
        """Users of ``key`` (0 when not held)."""
        held = self._held.get(key)
        return 0 if held is None else held.count

    def counts(self) -> dict[K, int]:
        """``{key: users}`` for every key held, in key order."""
        return {k: self._held[k].count for k in sorted(self._held)}  # type: ignore[type-var]

    def restore(self, key: K, obj: T, count: int) -> None:
        """Hold ``key`` as ``obj`` with ``count`` users (loading a checkpoint)."""
        if count < 1:
            raise ValueError(f"a snapshot is held by at least one user, got {count} for {key!r}")
        self._held[key] = _Held(obj, int(count))

    def clear(self) -> None:
        """Forget every object."""
        self._held.clear()

    def __getitem__(self, key: K) -> T:
        return self._held[key].obj

    def __iter__(self) -> Iterator[K]:
        return iter(self._held)

    def __len__(self) -> int:
        return len(self._held)

    def __repr__(self) -> str:
        return f"Snapshots({self.counts()!r})"
