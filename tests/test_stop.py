"""kmdb.stop: SIGINT and SIGTERM turned into a request to stop after the chunk in flight."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

from kmdb.errors import Stopped
from kmdb.stop import STOP, check_stop, stopping_on_signals


@pytest.fixture(autouse=True)
def no_stop_asked() -> Iterator[None]:
    STOP.clear()
    yield
    STOP.clear()


def test_a_signal_asks_to_stop_and_a_second_one_interrupts_at_once() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with stopping_on_signals():
        check_stop(1, 10)  # nothing asked yet
        os.kill(os.getpid(), signal.SIGTERM)
        assert STOP.is_set()
        with pytest.raises(Stopped) as stopped:
            check_stop(4, 200)
        assert (stopped.value.revision, stopped.value.line) == (4, 200)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) == before  # the old handlers come back


def test_outside_the_main_thread_no_handler_is_set() -> None:
    seen: list[object] = []

    def in_a_thread() -> None:
        with stopping_on_signals():
            seen.append(signal.getsignal(signal.SIGINT))

    before = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert seen == [before]
