"""A request to stop, shared by the import passes and the worker that runs them.

SIGINT and SIGTERM set it (the worker's warm shutdown, or stopping_on_signals
in an inline import); the passes look at it between chunks and stop after the
chunk in flight commits, raising Stopped. What was committed stays, and the
next run goes on from there.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from kmdb.errors import Stopped

# Set when the process is asked to shut down: stop after the chunk in flight commits.
STOP = threading.Event()


@contextlib.contextmanager
def stopping_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into a request to stop after the chunk in flight commits.

    A second signal interrupts at once (KeyboardInterrupt). Only in the main thread,
    where Python lets handlers be set; the old handlers come back on leaving.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ask(_signum: int, _frame: object) -> None:
        if STOP.is_set():
            raise KeyboardInterrupt
        STOP.set()

    old = {sig: signal.signal(sig, ask) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def check_stop(revision: int, line: int) -> None:
    """Raise Stopped if a stop was asked for; revision and line say where the pass got to."""
    if STOP.is_set():
        raise Stopped(revision, line)
