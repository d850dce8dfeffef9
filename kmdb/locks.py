"""Named locks that die with their holder: MySQL's GET_LOCK, held on a connection of its own.

A worker killed with SIGKILL drops its connection, so its locks are free at once;
that is how a re-run tells a dead worker's job from a running one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text

from kmdb.db import is_mysql


def lock_name(conn: Connection, what: str) -> str:
    """A lock name unique to this database (MySQL lock names are server-wide)."""
    database = conn.execute(text("SELECT DATABASE()")).scalar() or ""
    return f"kmdb:{database}:{what}"[:64]


@contextmanager
def held(engine: Engine, what: str, wait: float = 0) -> Iterator[bool]:
    """Hold the lock named `what` while inside; yields whether it was obtained.

    On SQLite, which has one writer at a time anyway, it always yields True.
    """
    if not is_mysql(engine):
        yield True
        return
    with engine.connect() as conn:
        name = lock_name(conn, what)
        got = conn.execute(text("SELECT GET_LOCK(:n, :w)"), {"n": name, "w": wait}).scalar() == 1
        try:
            yield got
        finally:
            if got:
                conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": name})


def is_held(engine: Engine, what: str) -> bool | None:
    """Whether some connection holds the lock; None where locks are not known (SQLite)."""
    if not is_mysql(engine):
        return None
    with engine.connect() as conn:
        name = lock_name(conn, what)
        return conn.execute(text("SELECT IS_USED_LOCK(:n)"), {"n": name}).scalar() is not None
