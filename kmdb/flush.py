"""Emptying the imported data (the filter tables are configuration and stay)."""

from __future__ import annotations

from sqlalchemy import Engine, func, select, text

from kmdb import indexes, schema
from kmdb.db import create_schema, is_mysql


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
    # Indexes put off by an import that never ended: cheap to build on empty tables.
    indexes.build(engine)
    return created, removed
