"""Named locks that die with their holder: MySQL's GET_LOCK, held on a connection of its own.

A worker killed with SIGKILL drops its connection, so its locks are free at once;
that is how a re-run tells a dead worker's job from a running one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text

from kmdb.db import is_mysql
from kmdb.errors import KmdbError

# How long a job waits for another worker that holds its revision.
LOCK_WAIT = 6 * 3600


def lock_name(conn: Connection, what: str) -> str:
    """A lock name unique to this database (MySQL lock names are server-wide)."""
    database = conn.execute(text("SELECT DATABASE()")).scalar() or ""
    return f"kmdb:{database}:{what}"[:64]


class LockBusy(KmdbError):
    """Another connection holds the lock, and the caller chose not to wait (long enough)."""


@contextmanager
def held(engine: Engine, what: str, wait: float = LOCK_WAIT) -> Iterator[None]:
    """Hold the lock named `what` while inside, waiting up to `wait` seconds for it.

    A second worker on the same revision waits here for the first to finish,
    then finds the work done. On SQLite, which has one writer at a time anyway,
    there is nothing to hold.
    """
    if not is_mysql(engine):
        yield
        return
    with engine.connect() as conn:
        name = lock_name(conn, what)
        got = conn.execute(text("SELECT GET_LOCK(:n, :w)"), {"n": name, "w": wait}).scalar()
        if got != 1:
            raise LockBusy(
                f"Could not take the lock {name} within {wait:.0f} s; another worker holds it."
            )
        try:
            yield
        finally:
            conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": name})


def is_held(engine: Engine, what: str) -> bool | None:
    """Whether some connection holds the lock; None where locks are not known (SQLite)."""
    if not is_mysql(engine):
        return None
    with engine.connect() as conn:
        name = lock_name(conn, what)
        return conn.execute(text("SELECT IS_USED_LOCK(:n)"), {"n": name}).scalar() is not None
