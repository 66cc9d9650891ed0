"""Stop requests: the first Ctrl-C (SIGINT) or SIGTERM asks the loop to stop at its next safe
point, with a checkpoint; the second stops at once."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

from lightning_asyncfl.errors import Interrupted

log = logging.getLogger(__name__)


class StopRequests:
    """The signal that asked to stop (:attr:`signum`, 0 for none), caught while :meth:`catching`."""

    def __init__(self) -> None:
        self.signum = 0

    @contextlib.contextmanager
    def catching(self) -> Iterator[None]:
        """Catch SIGINT and SIGTERM in this block (in the main thread; elsewhere signals cannot be caught)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self.signum:
                raise Interrupted(signum)
            self.signum = signum
            log.warning("%s: stopping after the current event with a checkpoint (again to stop at once)", signal.Signals(signum).name)

        previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)
