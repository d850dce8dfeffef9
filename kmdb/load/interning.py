"""Ids for names: the `keys` of events and properties, and the `users` that identities are."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Table, bindparam, select, text

from kmdb.load.engine import autocommit, is_mysql
from kmdb.retry import retrying_lock_conflicts

LOOKUP_BATCH = 1000
T = TypeVar("T")


def _chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Interner:
    """Ids for names in `keys` or `users`, inserting the missing ones.

    Inserts run in short autocommit transactions of their own (on the engine's
    autocommit twin, kmdb.load.engine.autocommit), in sorted order: inside a long
    transaction a worker could not see another worker's new rows (REPEATABLE READ),
    and unsorted concurrent INSERT IGNOREs deadlock.
    """

    def __init__(self, engine: Engine, table: Table, column: str, extra: str | None = None) -> None:
        self.engine = engine
        self.table = table
        self.column = table.c[column]
        self.extra = table.c[extra] if extra else None
        self.cache: dict[str, Any] = {}
        self._mysql = is_mysql(engine)
        verb = "INSERT IGNORE" if self._mysql else "INSERT OR IGNORE"
        self._insert = text(
            f"{verb} INTO {engine.dialect.identifier_preparer.quote(table.name)} "
            f"({engine.dialect.identifier_preparer.quote(column)}) VALUES (:name)"
        )

    def lookup(self, conn: Connection, names: Sequence[str]) -> None:
        """Read the ids of names that exist into the cache, on the caller's connection."""
        if self._mysql:
            self._lookup_mysql(conn, names)
            return
        columns = [self.column, self.table.c.id] + ([self.extra] if self.extra is not None else [])
        query = select(*columns).where(self.column.in_(bindparam("names", expanding=True)))
        for part in _chunks(names, LOOKUP_BATCH):
            for row in conn.execute(query, {"names": list(part)}):
                self.cache[row[0]] = row[1] if self.extra is None else (row[1], row[2])

    # On MySQL the statements go to PyMySQL's cursor directly: SQLAlchemy's expanding
    # IN cost more than the queries themselves. The names are bound as parameters,
    # which PyMySQL quotes for the connection's own mode (never by hand: a server
    # with NO_BACKSLASH_ESCAPES reads a backslash-escaped quote as the string's end).
    def _lookup_mysql(self, conn: Connection, names: Sequence[str]) -> None:
        extra = f", `{self.extra.name}`" if self.extra is not None else ""
        head = f"SELECT `{self.column.name}`, id{extra} FROM `{self.table.name}` WHERE `{self.column.name}` IN ("
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            for part in _chunks(names, LOOKUP_BATCH):
                cursor.execute(head + ",".join(["%s"] * len(part)) + ")", part)
                if self.extra is None:
                    self.cache.update(cursor.fetchall())
                else:
                    for name, id_, more in cursor.fetchall():
                        self.cache[name] = (id_, more)
        finally:
            cursor.close()

    def _insert_mysql(self, conn: Connection, names: Sequence[str]) -> None:
        sql = f"INSERT IGNORE INTO `{self.table.name}` (`{self.column.name}`) VALUES ("
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql + "),(".join(["%s"] * len(names)) + ")", names)
        finally:
            cursor.close()

    def ids(self, names: Iterable[str]) -> dict[str, Any]:
        """The cache, holding every one of names (id, or (id, extra) with an extra column)."""
        wanted = sorted({n for n in names if n not in self.cache})
        if not wanted:
            return self.cache
        with autocommit(self.engine).connect() as conn:
            self.lookup(conn, wanted)
            missing = [n for n in wanted if n not in self.cache]
            if missing:
                for part in _chunks(missing, LOOKUP_BATCH):
                    if self._mysql:
                        retrying_lock_conflicts(partial(self._insert_mysql, conn, part))
                    else:
                        rows = [{"name": n} for n in part]
                        retrying_lock_conflicts(partial(conn.execute, self._insert, rows))
                self.lookup(conn, missing)
        lost = [n for n in wanted if n not in self.cache]
        if lost:
            raise RuntimeError(f"{len(lost)} names of {self.table.name} could not be interned")
        return self.cache
