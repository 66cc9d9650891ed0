"""The zygote: a process forked from the run's own process before any training, that forks the workers.

``executor=processes`` needs worker processes that hold torch and Lightning. A fresh
interpreter (``spawn``) or a fork server imports them again: about 400 MiB of pages the
run's process already holds (torch's import alone is 280 MiB of private memory), held a
second time. The zygote is forked from the run's process once it has imported them and
before it has loaded any data or run any torch operation; every worker is then forked from
the zygote, so the run's process, the zygote and the workers share those pages.

It must be forked before torch's first parallel operation: torch's CPU threads (OpenMP)
cannot be used in a process forked after they started (the child hangs). So the zygote is
started only where the framework knows no computation has run yet: by
``python -m lightning_asyncfl`` before its first experiment, or by a script that calls
:func:`start_zygote` first thing. Elsewhere (a notebook, a test that already trained), the
executor falls back to the fork server (``executor.start_method=auto``).

Workers forked by the zygote are its children, not the run's: the run watches each
through a pidfd (Linux 5.3), kills it through that pidfd (never a process that reused
its pid), and asks the zygote for its exit code. The zygote ignores Ctrl-C (the run
stops the workers), exits when the run's process closes its end of the pipe (at exit,
:mod:`atexit`) and is killed by Linux if the run's process dies (``PR_SET_PDEATHSIG``);
its workers likewise die with it.
"""

from __future__ import annotations

import atexit
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import select
import signal
import threading
from typing import Any

from multiprocessing import reduction

log = logging.getLogger(__name__)

_zygote: Zygote | None = None
_lock = threading.Lock()
_control: Any = None  # in the zygote: its end of the pipe to the run (closed in the workers it forks)


def supported() -> bool:
    """Whether this platform can run a zygote (fork, pidfds and descriptor passing: Linux)."""
    return hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal") and reduction.HAVE_SEND_HANDLE and "fork" in multiprocessing.get_all_start_methods()


def start_zygote() -> bool:
    """Fork this process's zygote, if it has none; True if one is running.

    Call it before any torch computation in the process (``python -m lightning_asyncfl``
    does): a process forked after torch's CPU threads started hangs when it uses them.
    """
    global _zygote
    with _lock:
        if _zygote is not None and _zygote.alive():
            return True
        if not supported():
            return False
        _zygote = Zygote()
        return True


def current() -> Zygote | None:
    """The running zygote of this process, or None."""
    zygote = _zygote
    return zygote if zygote is not None and zygote.alive() else None


def _zygote_main(conn: Any, runs_end: Any, parent_pid: int) -> None:
    """The zygote's loop: fork a worker for each request, report exit codes, stop at EOF."""
    from lightning_asyncfl.executors.processes import _die_with_parent

    global _control
    runs_end.close()  # the copy forked with it: only the run's own end may hold the pipe open
    _control = conn
    root = logging.getLogger()
    for handler in list(root.handlers):  # the run's handlers (its log file: a multirun's first job's): a worker warns on stderr, as a spawned one
        root.removeHandler(handler)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    gc.freeze()  # the pages shared with the run's process: the workers' collector leaves them alone
    context = multiprocessing.get_context("fork")
    children: dict[int, Any] = {}
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            break
        if request[0] == "fork":
            fd = reduction.recv_handle(conn)
            child = context.Process(target=_child_main, args=(fd,), name=request[1], daemon=True)
            child.start()
            os.close(fd)
            children[child.pid] = child
            conn.send(child.pid)
        elif request[0] == "reap":
            child = children.get(request[1])
            code = None
            if child is not None:
                child.join(timeout=request[2])
                code = child.exitcode
                if code is not None:
                    del children[child.pid]
            conn.send(code)
    for child in children.values():
        child.kill()
        child.join(timeout=5)


def _child_main(fd: int) -> None:
    """A worker forked by the zygote: receive its trainer factory from the run, then serve jobs."""
    from lightning_asyncfl.executors.processes import _worker_main

    import traceback

    _control.close()  # the run sees the zygote's end close when the zygote exits, not when every worker has
    conn = multiprocessing.connection.Connection(fd)
    try:
        make_trainer, device, num_threads = conn.recv()
    except (EOFError, OSError):  # the run stopped before sending it
        return
    except Exception as error:  # a class the worker cannot import
        conn.send(("error", None, f"{type(error).__name__}: {error}\n{traceback.format_exc()}"))
        return
    _worker_main(conn, make_trainer, device, num_threads, None)


class Zygote:
    """The run's handle on its zygote process (requests are serialized: proxy threads share it)."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("fork")
        self._conn, child_end = context.Pipe()
        self._lock = threading.Lock()
        self.process = context.Process(target=_zygote_main, args=(child_end, self._conn, os.getpid()), name="asyncfl-zygote")
        self.process.start()
        child_end.close()
        atexit.register(self.stop)
        log.debug("zygote started (pid %d)", self.process.pid)

    def alive(self) -> bool:
        return self.process.is_alive() and not self._conn.closed

    def fork(self, name: str) -> tuple[Forked, Any]:
        """A new worker process and the run's end of its pipe; it waits for ``(make_trainer, device, num_threads)``."""
        ours, theirs = multiprocessing.Pipe()
        try:
            with self._lock:
                self._conn.send(("fork", name))
                reduction.send_handle(self._conn, theirs.fileno(), self.process.pid)
                pid = self._conn.recv()
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return Forked(self, pid, name), ours

    def reap(self, pid: int, timeout: float) -> int | None:
        with self._lock:
            self._conn.send(("reap", pid, timeout))
            return self._conn.recv()

    def stop(self) -> None:
        if self._conn.closed:
            return
        self._conn.close()  # the zygote reads EOF, kills its workers left and exits
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)


class Forked:
    """A worker the zygote forked: the parts of :class:`multiprocessing.Process` the executor uses."""

    def __init__(self, zygote: Zygote, pid: int, name: str) -> None:
        self._zygote, self.pid, self.name = zygote, pid, name
        self.sentinel = os.pidfd_open(pid)  # readable once the process has exited
        self.exitcode: int | None = None

    def _exited(self, timeout: float | None) -> bool:
        if self.exitcode is not None:
            return True
        ready, _, _ = select.select([self.sentinel], [], [], timeout)
        return bool(ready)

    def is_alive(self) -> bool:
        return not self._exited(0)

    def join(self, timeout: float | None = None) -> None:
        if self.exitcode is None and self._exited(timeout):
            try:
                self.exitcode = self._zygote.reap(self.pid, 5.0)
            except (EOFError, OSError):  # the zygote is gone, and the exit code with it: it stays unknown (None)
                pass

    def kill(self) -> None:
        try:  # through the pidfd: never another process that reused the pid
            signal.pidfd_send_signal(self.sentinel, signal.SIGKILL)
        except ProcessLookupError:  # already exited
            pass

    def __del__(self) -> None:
        try:
            os.close(self.sentinel)
        except (OSError, AttributeError):
            pass
