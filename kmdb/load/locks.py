"""Named locks that die with their holder: MySQL's GET_LOCK, held on a connection of its own.

A worker killed with SIGKILL drops its connection, so its locks are free at once;
that is how a re-run tells a dead worker's job from a running one. The names of
kmdb's locks are made here, for the passes that take them and for the jobs'
liveness, which looks at them.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text

from kmdb.errors import LockBusy
from kmdb.load.engine import autocommit, is_mysql

# How long a job waits for another worker that holds its revision.
LOCK_WAIT = 6 * 3600

# Held by a settle, and by a scan's merge of sightings (which gives way to a settle).
SETTLE_LOCK = "settle"
# Held while a graph of jobs is planned: one planner at a time.
PLAN_LOCK = "plan"


def revision_lock(revision: int) -> str:
    """The lock a scan holds on a revision it reads."""
    return f"revision:{revision}"


def part_lock(revision: int, part: int) -> str:
    """The lock an import holds on a part of a revision file."""
    return f"revision:{revision}:part:{part}"


# The database each engine's connections use, as the server names it.
_databases: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def _database(conn: Connection) -> str:
    return conn.execute(text("SELECT DATABASE()")).scalar() or ""


# MySQL lock names are server-wide and at most 64 characters long.
MAX_NAME = 64


def _digest(text_: str, length: int) -> str:
    return hashlib.sha256(text_.encode()).hexdigest()[:length]


def lock_name(conn: Connection, what: str, database: str | None = None) -> str:
    """A lock name unique to this database and to `what`, at most 64 characters.

    Database names may be 64 characters long themselves: a name cut to fit made
    every lock of such a database the same lock. The database is named by a
    digest, and so is a `what` too long to fit after it.
    """
    db = _database(conn) if database is None else database
    name = f"kmdb:{_digest(db, 16)}:{what}"
    if len(name) > MAX_NAME:
        name = f"kmdb:{_digest(db, 16)}:{_digest(what, 32)}"
    return name


class LockSet:
    """Named locks taken on a connection of their own, and freed together.

    A job that imports many small parts takes the locks of all its parts when it
    starts and keeps them to its end: one connection for all, not one each. On
    SQLite, which has one writer at a time anyway, there is nothing to hold.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Connection | None = None
        self._database = ""
        self._names: list[str] = []

    def _connect(self) -> Connection:
        if self._conn is None:
            # In autocommit mode: named locks are the session's, not a transaction's,
            # and a connection that read no table goes back to its pool with no ROLLBACK.
            self._conn = autocommit(self.engine).connect()
            # Asked once per engine: a job of many small parts opens a LockSet each.
            if self.engine not in _databases:
                _databases[self.engine] = _database(self._conn)
            self._database = _databases[self.engine]
        return self._conn

    def take(self, what: str, wait: float = LOCK_WAIT) -> None:
        """Take the lock named `what`, waiting up to `wait` seconds for another holder."""
        if not is_mysql(self.engine):
            return
        conn = self._connect()
        name = lock_name(conn, what, self._database)
        got = conn.execute(text("SELECT GET_LOCK(:n, :w)"), {"n": name, "w": wait}).scalar()
        if got != 1:
            raise LockBusy(name, wait)
        self._names.append(name)

    def take_all(self, whats: list[str], wait: float = LOCK_WAIT) -> None:
        """Take the locks named by whats, in order: those free at once in one statement.

        A round trip per lock would cost a job of many small files dearly. Locks
        are still taken in order, so that two jobs never wait on each other: those
        after the first busy one are given back, and the rest taken one by one.
        """
        if not is_mysql(self.engine) or not whats:
            return
        conn = self._connect()
        # Those held already (a job takes its first part's lock early) are not taken twice.
        named = [(what, lock_name(conn, what, self._database)) for what in whats]
        named = [(what, name) for what, name in named if name not in self._names]
        if not named:
            return
        whats, names = [what for what, _ in named], [name for _, name in named]
        params = {f"n{i}": name for i, name in enumerate(names)}
        calls = ", ".join(f"GET_LOCK(:n{i}, 0)" for i in range(len(names)))
        got = conn.execute(text(f"SELECT {calls}"), params).one()
        busy = next((i for i, g in enumerate(got) if g != 1), len(names))
        self._names += names[:busy]
        self._release([name for name, g in zip(names[busy:], got[busy:], strict=True) if g == 1])
        for what in whats[busy:]:
            self.take(what, wait)

    def _release(self, names: list[str]) -> None:
        if names and self._conn is not None:
            params = {f"n{i}": name for i, name in enumerate(names)}
            calls = ", ".join(f"RELEASE_LOCK(:n{i})" for i in range(len(names)))
            self._conn.execute(text(f"SELECT {calls}"), params)

    def close(self) -> None:
        """Free every lock taken (in one statement), and the connection."""
        if self._conn is None:
            return
        try:
            self._release(list(reversed(self._names)))
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
