"""Emptying the imported data (the filter tables are configuration and stay).

Everything a flush needs is checked before anything changes: the database
answers, and its user may create, index, empty and drop tables (the command
checks Redis too, kmdb.orchestrate.queues.check_redis).
"""

from __future__ import annotations

import os

from sqlalchemy import Engine, func, inspect, select, text
from sqlalchemy.exc import DBAPIError

from kmdb.errors import ConfigError
from kmdb.load import epoch, indexes, schema
from kmdb.load.database import create_schema
from kmdb.load.engine import is_mysql


def contents(engine: Engine) -> dict[str, int]:
    """Rows in each imported table that exists now: what a flush would empty."""
    existing = set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        return {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in schema.IMPORTED
            if table.name in existing
        }


def check_can_write(engine: Engine, where: str, what: str = "empty its tables") -> None:
    """Raise ConfigError unless the database user may create, index, fill, empty and drop a table.

    Tried on a scratch table of its own, so that a missing privilege stops a
    command before it has changed anything, not half-way through.
    """
    name = f"kmdb_write_check_{os.getpid()}"
    quoted = f"`{name}`" if is_mysql(engine) else f'"{name}"'
    empty = f"TRUNCATE TABLE {quoted}" if is_mysql(engine) else f"DELETE FROM {quoted}"
    steps = [
        f"CREATE TABLE {quoted} (id INTEGER NOT NULL)",
        f"CREATE INDEX ix_{name} ON {quoted} (id)",
        f"INSERT INTO {quoted} (id) VALUES (1)",
        empty,
    ]
    try:
        with engine.connect() as conn:
            try:
                for step in steps:
                    conn.execute(text(step))
                    conn.commit()
            finally:
                conn.rollback()
                conn.execute(text(f"DROP TABLE IF EXISTS {quoted}"))
                conn.commit()
    except DBAPIError as exc:
        reason = exc.orig.args[-1] if exc.orig is not None and exc.orig.args else exc
        raise ConfigError(
            f"kmdb may not {what} in the database at {where} ({reason}); nothing was changed. Grant the user CREATE, DROP, INDEX, ALTER, "
            "INSERT, UPDATE, DELETE and SELECT on that database, or use one that has them."
        ) from None


def flush(engine: Engine) -> tuple[list[str], dict[str, int]]:
    """Create missing tables, then empty the imported ones; return (created, rows removed per table)."""
    created = create_schema(engine, rebuild=True)
    removed: dict[str, int] = {}
    with engine.begin() as conn:
        for table in schema.IMPORTED:
            removed[table.name] = conn.execute(select(func.count()).select_from(table)).scalar_one()
            if is_mysql(engine):
                # TRUNCATE keeps partitions and frees space at once; DELETE would log every row.
                conn.execute(text(f"TRUNCATE TABLE `{table.name}`"))
            else:
                conn.execute(table.delete())
    # Ids remembered by running workers now name nothing.
    epoch.renew(engine)
    # Indexes put off by an import that never ended: cheap to build on empty tables.
    indexes.build(engine)
    return created, removed
