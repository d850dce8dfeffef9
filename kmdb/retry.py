"""Trying an action again after a failure worth it: one helper, and kmdb's backoffs in one place.

Which failures are worth another attempt is kmdb.errors' decision (is_transient,
is_lock_conflict); how long to keep trying is a Backoff's. Four waits differ in
what they ride out, so each has its own backoff below:

- LOCK_CONFLICT: a deadlock or lock-wait timeout of one statement, retried at
  once and soon given up (the transaction is rolled back and run again);
- OUTAGE: a job that lost the database or S3, tried again from its last commit
  for up to KMDB_OUTAGE_WAIT seconds of waiting in all;
- REDIS_OUTAGE: a worker's step of RQ bookkeeping while Redis does not answer,
  and DATABASE_AT_START: a worker whose database does not answer yet, each for
  up to KMDB_OUTAGE_WAIT seconds from its first attempt;
- BETWEEN_JOBS: a burst worker that looks for work left while the database is
  away, for as long as it takes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from kmdb.errors import is_lock_conflict

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """How to wait between attempts, and when to stop trying."""

    # Seconds to wait before each new attempt; the last is repeated.
    pauses: tuple[float, ...]
    # Attempts in all before the failure is raised (None: no limit but the budget).
    attempts: int | None = None
    # Whether the budget counts the time from the first attempt (the attempts' own
    # time too), rather than the pauses alone: a job may run for hours before it fails.
    from_first_attempt: bool = False

    def pause(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (0 for the first)."""
        return self.pauses[min(retry, len(self.pauses) - 1)]


LOCK_CONFLICT = Backoff((0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0), attempts=8)
OUTAGE = Backoff((2, 5, 15, 30, 60, 120))
REDIS_OUTAGE = Backoff((0.5, 1, 2, 4, 8, 10), from_first_attempt=True)
DATABASE_AT_START = Backoff((1, 2, 4, 8, 15), from_first_attempt=True)
BETWEEN_JOBS = Backoff((2,))


def retrying(
    action: Callable[[], T],
    worth_it: Callable[[BaseException], bool],
    backoff: Backoff,
    *,
    budget: Callable[[], float] | None = None,
    say: str = "",
    level: int = logging.WARNING,
    wait: Callable[[float], None] = time.sleep,
    give_up: Callable[[BaseException, float], BaseException] | None = None,
) -> T:
    """Run action until it succeeds, again after each failure that is `worth_it`, with backoff.

    budget gives the seconds to keep trying (asked once, at the first failure);
    without one only the backoff's attempts limit the tries. Each retry is logged
    with say, formatted with {error}, {pause} and {budget}. wait sleeps between
    attempts; give_up makes the exception to raise instead of the last failure
    (given it and the budget). Any other failure is raised at once.
    """
    started = time.monotonic()
    waited = 0.0
    bound: float | None = None
    retry = 0
    while True:
        try:
            return action()
        except Exception as exc:
            if not worth_it(exc):
                raise
            pause = backoff.pause(retry)
            retry += 1
            out_of_attempts = backoff.attempts is not None and retry >= backoff.attempts
            if budget is not None and not out_of_attempts:
                if bound is None:
                    bound = budget()
                spent = time.monotonic() - started if backoff.from_first_attempt else waited
                out_of_attempts = spent >= bound
                pause = min(pause, bound - spent)
            if out_of_attempts:
                if give_up is None:
                    raise
                raise give_up(exc, bound or 0.0) from None
            if say:
                log.log(level, say.format(error=exc, pause=pause, budget=bound or 0.0))
            wait(pause)
            waited += pause


def retrying_lock_conflicts(action: Callable[[], T]) -> T:
    """Run a statement or transaction again after a deadlock or lock-wait timeout."""
    return retrying(
        action,
        is_lock_conflict,
        LOCK_CONFLICT,
        say="Retrying after a deadlock or lock wait ({error}) in {pause:.2f} s",
        level=logging.INFO,
    )
