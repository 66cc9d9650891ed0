"""Errors that teach: every message names the key, the bad value and what is allowed.

Constructors of configurable classes raise :class:`InvalidValue` with the key relative to
their own config node (``alpha``); :func:`lightning_asyncfl.run.run` prefixes the node's
path (``server.aggregator.alpha``) and reports every problem of a config at once in one
:class:`ConfigError`, before any training starts.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any


class InvalidValue(ValueError):
    """A configuration value outside what is allowed.

    Args:
        key: the config key, relative to the node of the object that checks it.
        value: the value that was given.
        allowed: what is allowed, in words (``"in (0, 1]"``, ``"one of: a, b"``).
    """

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(self._text())

    def _text(self) -> str:
        return f"{self.key} must be {self.allowed}, got {self.value!r}"

    def under(self, prefix: str) -> InvalidValue:
        """The same problem with the key placed under the config node ``prefix``."""
        key = f"{prefix}.{self.key}" if prefix else self.key
        return InvalidValue(key, self.value, self.allowed)


class InvalidValues(ValueError):
    """Several :class:`InvalidValue` of one object, raised together by :func:`checking`."""

    def __init__(self, problems: Iterable[InvalidValue]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))

    def under(self, prefix: str) -> InvalidValues:
        """The same problems with their keys placed under the config node ``prefix``."""
        return InvalidValues(p.under(prefix) for p in self.problems)


class ConfigError(ValueError):
    """Every problem found in a config, reported together before any training starts."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise :class:`InvalidValue` unless ``ok``."""
    if not ok:
        raise InvalidValue(key, value, allowed)


@contextlib.contextmanager
def checking() -> Iterator[Callable[[bool, str, Any, str], None]]:
    """Collect every failed ``check(ok, key, value, allowed)`` of a block and raise them together.

    An :class:`InvalidValue` raised inside the block (by a nested constructor) joins them.

    Example::

        with checking() as check:
            check(alpha > 0, "alpha", alpha, "> 0")
            check(a >= 0, "a", a, ">= 0")
    """
    problems: list[InvalidValue] = []

    def check(ok: bool, key: str, value: Any, allowed: str) -> None:
        if not ok:
            problems.append(InvalidValue(key, value, allowed))

    try:
        yield check
    except InvalidValue as error:
        problems.append(error)
    except InvalidValues as error:
        problems.extend(error.problems)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise InvalidValues(problems)


def require_choice(key: str, value: Any, choices: Iterable[str]) -> None:
    """Raise :class:`InvalidValue` unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise InvalidValue(key, value, "one of: " + ", ".join(choices))


# -- typed validators: one spelling of each common rule --------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive_int(key: str, value: Any) -> int:
    """``value`` if it is an integer >= 1, else :class:`InvalidValue` naming ``key``."""
    require(_is_int(value) and value >= 1, key, value, "an integer >= 1")
    return value


def non_negative_int(key: str, value: Any) -> int:
    """``value`` if it is an integer >= 0, else :class:`InvalidValue` naming ``key``."""
    require(_is_int(value) and value >= 0, key, value, "an integer >= 0")
    return value


def finite(key: str, value: Any) -> float:
    """``value`` as a float if it is a finite number, else :class:`InvalidValue`."""
    require(_is_number(value) and math.isfinite(value), key, value, "a finite number")
    return float(value)


def positive(key: str, value: Any) -> float:
    """``value`` as a float if it is a finite number > 0, else :class:`InvalidValue`."""
    require(_is_number(value) and math.isfinite(value) and value > 0, key, value, "a finite number > 0")
    return float(value)


def non_negative(key: str, value: Any) -> float:
    """``value`` as a float if it is a finite number >= 0, else :class:`InvalidValue`."""
    require(_is_number(value) and math.isfinite(value) and value >= 0, key, value, "a finite number >= 0")
    return float(value)


def probability(key: str, value: Any, *, open_low: bool = False, open_high: bool = False) -> float:
    """``value`` as a float if it is in [0, 1] (ends open as asked), else :class:`InvalidValue`."""
    ok = _is_number(value) and (value > 0 if open_low else value >= 0) and (value < 1 if open_high else value <= 1)
    require(ok, key, value, f"a number in {'(' if open_low else '['}0, 1{')' if open_high else ']'}")
    return float(value)


def validate(check: Callable[[bool, str, Any, str], None], validator: Callable[..., Any], key: str, value: Any,
             **kwargs: Any) -> Any:
    """``validator(key, value, **kwargs)`` inside a :func:`checking` block: a problem joins the others.

    A typed validator raises at the first bad value; this runs one and hands its problem to
    ``check`` instead, so every bad key of a constructor is reported together. Returns the
    validated value, or ``value`` unchanged when it is bad.

    Example::

        with checking() as check:
            validate(check, positive_int, "buffer_size", buffer_size)
            validate(check, probability, "alpha", alpha, open_low=True)
    """
    try:
        return validator(key, value, **kwargs)
    except InvalidValue as error:
        check(False, error.key, error.value, error.allowed)
        return value


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped the run at a safe point, after a checkpoint.

    Args:
        signum: the signal that asked for the stop; the command line exits with 128 + it
            (130 for Ctrl-C, 143 for SIGTERM), as a shell reports a process killed by it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class RunFailed(RuntimeError):
    """A run that could not go on: no progress, a dead end, workers that cannot start.

    The message says why, in words for the user; the command line prints it without a
    traceback and exits with code 1. The run's ``summary.json`` says ``failed``.
    """
