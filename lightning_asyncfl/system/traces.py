"""Reading trace files someone sent you without running their code.

FedScale ships its device and behaviour traces as Python pickles. Unpickling an untrusted
file runs whatever it names, so :func:`read_trace` reads a pickle with an unpickler that
refuses every global (only dicts, lists, tuples, numbers, strings, bytes, booleans and
None can come out of it), and also reads the same data as JSON or CSV.
"""

from __future__ import annotations

import csv
import io
import json
import math
import pickle
from pathlib import Path
from typing import Any

from lightning_asyncfl.errors import InvalidValue

__all__ = ["read_trace"]


class _PlainUnpickler(pickle.Unpickler):
    """An unpickler for plain data: any class or function reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"the file refers to {module}.{name}; a trace may hold only plain data")


def _from_pickle(data: bytes) -> Any:
    return _PlainUnpickler(io.BytesIO(data)).load()


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _from_csv(text: str) -> dict[str, dict[str, Any]]:
    """``client_id,col1,col2,...`` rows as ``{client_id: {col: value}}``; numbers parsed."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or "client_id" not in rows[0]:
        raise ValueError("a CSV trace needs a header with a client_id column")
    return {str(row.pop("client_id")): {k: _number(v) for k, v in row.items()} for row in rows}


def read_trace(path: str | Path, key: str = "file") -> Any:
    """The plain data of a trace file: ``.json``, ``.csv``, or a pickle (``.pkl``, ``.pickle``, FedScale's names).

    Args:
        path: the file.
        key: the config key that named it, for the error message.

    Raises:
        InvalidValue: the file is missing, unreadable, or holds anything but plain data.
    """
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise InvalidValue(key, str(path), "an existing trace file (.json, .csv, or FedScale's pickle)")
    suffix = p.suffix.lower()
    try:
        if suffix == ".json":
            return json.loads(p.read_text(encoding="utf-8"))
        if suffix == ".csv":
            return _from_csv(p.read_text(encoding="utf-8"))
        return _from_pickle(p.read_bytes())
    except (pickle.UnpicklingError, ValueError, EOFError, UnicodeDecodeError, IndexError, KeyError, TypeError) as error:
        raise InvalidValue(key, str(path), f"a trace of plain data in JSON, CSV or pickle form ({type(error).__name__}: {error})") from None


def finite(key: str, value: Any, *, positive: bool = False) -> float:
    """``value`` as a finite float (> 0 with ``positive``, else >= 0), or :class:`InvalidValue`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidValue(key, value, "a finite number")
    if value < 0 or (positive and value == 0):
        raise InvalidValue(key, value, "> 0" if positive else ">= 0")
    return float(value)
