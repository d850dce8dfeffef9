"""The secondary indexes of events and properties: put off during a first import, built at its end.

Keeping three indexes of `properties` and two of `events` up to date row by row
is most of what the server does during an import. Into empty tables, building
them once at the end, by sorting, costs far less than the loads spend on them
(docs/performance.md). So kmdb-import drops them when it plans an import into
empty tables, and the settle step after the import builds them again. Until
then, queries by person or by name are slow; kmdb-status says so.

Any settle that finds rows and missing indexes builds them first, because its
re-pointing of rows needs them (without them it would scan a table per person).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlalchemy import Connection, Engine, Index, Table, inspect, select

from kmdb.faults import pause
from kmdb.load import schema
from kmdb.load.engine import is_mysql

T = TypeVar("T")

log = logging.getLogger(__name__)

PUT_OFF = (schema.events, schema.properties)
# Tables whose indexes are never put off, but which a database made by an older kmdb
# may lack (create_all makes no index on a table that exists): built where missing.
KEPT = (schema.users, schema.people_changes)
# Indexes of an older kmdb that a wider one of the schema now serves (kmdb/schema.py):
# dropped where found when indexes are built or put off, so a table keeps one of each.
REPLACED = {
    "events": ("events_user_t", "events_n_t"),
    "properties": ("properties_key_t",),
}


def missing(conn: Connection) -> dict[str, list[Index]]:
    """The indexes of events and properties that the tables lack, by table name."""
    inspector = inspect(conn)
    found: dict[str, list[Index]] = {}
    for table in PUT_OFF:
        there = {ix["name"] for ix in inspector.get_indexes(table.name)}
        lacking = sorted((ix for ix in table.indexes if ix.name not in there), key=_name)
        if lacking:
            found[table.name] = lacking
    return found


def _name(index: Index) -> str:
    return str(index.name)


def _replaced(conn: Connection, table: Table) -> list[str]:
    there = {ix["name"] for ix in inspect(conn).get_indexes(table.name)}
    return [name for name in REPLACED.get(table.name, ()) if name in there]


def has_rows(conn: Connection) -> bool:
    """Whether events or properties hold a row."""
    return any(conn.execute(select(1).select_from(t).limit(1)).first() for t in PUT_OFF)


def put_off(engine: Engine) -> bool:
    """Drop the indexes of events and properties if both tables are empty; True if it did."""
    with engine.connect() as conn:
        if has_rows(conn):
            return False
        lacking = missing(conn)
        old = {table.name: _replaced(conn, table) for table in PUT_OFF}
    dropped = False
    for table in PUT_OFF:
        gone = {_name(ix) for ix in lacking.get(table.name, [])}
        present = [_name(ix) for ix in sorted(table.indexes, key=_name) if _name(ix) not in gone]
        present += old[table.name]
        if not present:
            continue
        with engine.begin() as conn:
            _drop(engine, conn, table, present)
        dropped = True
    if dropped:
        log.info("Indexes of events and properties put off until the import ends.")
    return dropped


def _drop(engine: Engine, conn: Connection, table: Table, names: list[str]) -> None:
    quote = engine.dialect.identifier_preparer.quote
    if is_mysql(engine):
        drops = ", ".join(f"DROP INDEX {quote(name)}" for name in names)
        conn.exec_driver_sql(f"ALTER TABLE {quote(table.name)} {drops}")
    else:
        for name in names:
            conn.exec_driver_sql(f"DROP INDEX {quote(name)}")


def _build(engine: Engine, table: Table, indexes: list[Index]) -> None:
    with engine.begin() as conn:
        old = _replaced(conn, table)
        if is_mysql(engine):
            # One ALTER per table reads the table once for all its indexes.
            quote = engine.dialect.identifier_preparer.quote
            changes = [f"DROP INDEX {quote(name)}" for name in old] + [
                f"ADD INDEX {quote(str(ix.name))} ({', '.join(quote(c.name) for c in ix.columns)})"
                for ix in indexes
            ]
            conn.exec_driver_sql(f"ALTER TABLE {quote(table.name)} {', '.join(changes)}")
        else:
            for ix in indexes:
                ix.create(conn)
            if old:
                _drop(engine, conn, table, old)


def _build_kept(engine: Engine) -> list[str]:
    """Build the indexes of KEPT tables that a database made by an older kmdb lacks."""
    with engine.connect() as conn:
        inspector = inspect(conn)
        lacking = {
            table: [
                ix
                for ix in sorted(table.indexes, key=_name)
                if ix.name not in {i["name"] for i in inspector.get_indexes(table.name)}
            ]
            for table in KEPT
        }
    built = []
    for table, ixs in lacking.items():
        if ixs:
            _build(engine, table, ixs)
            built += [_name(ix) for ix in ixs]
    if built:
        log.info("Built the indexes %s.", ", ".join(built))
    return built


def build(engine: Engine, only_with_rows: bool = False) -> list[str]:
    """Build the indexes of events and properties that are missing; return their names.

    With only_with_rows, tables that are both still empty keep them put off (the
    settle before an import). On MySQL the two tables are indexed side by side.
    Indexes that a database made by an older kmdb lacks elsewhere (KEPT) are built too.
    """
    kept = _build_kept(engine)
    with engine.connect() as conn:
        lacking = missing(conn)
        if not lacking or (only_with_rows and not has_rows(conn)):
            return kept
    pause("index-build")
    started = time.perf_counter()
    tables = [t for t in PUT_OFF if t.name in lacking]
    if is_mysql(engine) and len(tables) > 1:
        side_by_side(lambda table: _build(engine, table, lacking[table.name]), tables)
    else:
        for table in tables:
            _build(engine, table, lacking[table.name])
    names = [str(ix.name) for t in tables for ix in lacking[t.name]]
    log.info("Built the indexes %s in %.1f s.", ", ".join(names), time.perf_counter() - started)
    return kept + names


def side_by_side(action: Callable[[T], object], items: Sequence[T]) -> None:
    """action on each item, each in a thread of its own; the first error is raised here.

    MariaDB builds one table's indexes on one core: two tables use two.
    """
    errors: list[BaseException] = []

    def run(item: T) -> None:
        try:
            action(item)
        except BaseException as exc:  # re-raised in the calling thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
