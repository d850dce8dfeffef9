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


def _database(conn: Connection) -> str:
    return conn.execute(text("SELECT DATABASE()")).scalar() or ""


def lock_name(conn: Connection, what: str, database: str | None = None) -> str:
    """A lock name unique to this database (MySQL lock names are server-wide)."""
    return f"kmdb:{_database(conn) if database is None else database}:{what}"[:64]


class LockBusy(KmdbError):
    """Another connection holds the lock, and the caller chose not to wait (long enough)."""


class LockSet:
    """Named locks taken one by one on a connection of their own, and freed together.

    A job that imports many small parts takes each part's lock as it starts on
    it and keeps them all to its end: one connection for all, not one each. On
    SQLite, which has one writer at a time anyway, there is nothing to hold.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Connection | None = None
        self._database = ""
        self._names: list[str] = []

    def take(self, what: str, wait: float = LOCK_WAIT) -> None:
        """Take the lock named `what`, waiting up to `wait` seconds for another holder."""
        if not is_mysql(self.engine):
            return
        if self._conn is None:
            self._conn = self.engine.connect()
            self._database = _database(self._conn)
        name = lock_name(self._conn, what, self._database)
        got = self._conn.execute(text("SELECT GET_LOCK(:n, :w)"), {"n": name, "w": wait}).scalar()
        if got != 1:
            raise LockBusy(
                f"Could not take the lock {name} within {wait:.0f} s; another worker holds it."
            )
        self._names.append(name)

    def close(self) -> None:
        """Free every lock taken, and the connection."""
        if self._conn is None:
            return
        try:
            for name in reversed(self._names):
                self._conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": name})
        finally:
            self._names = []
            self._conn.close()
            self._conn = None

    def __enter__(self) -> LockSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def held(engine: Engine, what: str, wait: float = LOCK_WAIT) -> Iterator[None]:
    """Hold the lock named `what` while inside, waiting up to `wait` seconds for it.

    A second worker on the same revision waits here for the first to finish,
    then finds the work done.
    """
    with LockSet(engine) as locks:
        locks.take(what, wait)
        yield


def is_held(engine: Engine, what: str) -> bool | None:
    """Whether some connection holds the lock; None where locks are not known (SQLite)."""
    if not is_mysql(engine):
        return None
    with engine.connect() as conn:
        name = lock_name(conn, what)
        return conn.execute(text("SELECT IS_USED_LOCK(:n)"), {"n": name}).scalar() is not None
