"""A kmdb database: making its tables and views where missing, or opening one that must exist."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, inspect, make_url

from kmdb.errors import ConfigError, NoDatabase
from kmdb.load import epoch, schema
from kmdb.load.engine import make_engine
from kmdb.load.views import VIEWS, create_views
from kmdb.settings import Settings, mask_url


def outdated_tables(engine: Engine) -> list[str]:
    """Tables that exist without a column kmdb's schema has (made by an older kmdb)."""
    inspector = inspect(engine)
    existing = set(inspector.get_table_names())
    return [
        t.name
        for t in schema.metadata.sorted_tables
        if t.name in existing
        and {c.name for c in t.columns} - {c["name"] for c in inspector.get_columns(t.name)}
    ]


def create_schema(engine: Engine, rebuild: bool = False) -> list[str]:
    """Create whatever tables and views are missing; return their names.

    A table of imported data left by an older kmdb is dropped and made anew with
    rebuild=True (kmdb-flush empties it anyway); otherwise it is an error.
    """
    outdated = outdated_tables(engine)
    if outdated:
        imported = {t.name for t in schema.IMPORTED}
        if not rebuild or set(outdated) - imported:
            raise ConfigError(
                f"The tables {', '.join(outdated)} were made by an older kmdb; run kmdb-flush, "
                "which empties the imported data and makes them anew."
            )
        schema.metadata.drop_all(engine, tables=[schema.metadata.tables[n] for n in outdated])
    inspector = inspect(engine)
    existing = set(inspector.get_table_names())
    missing = [t for t in schema.metadata.sorted_tables if t.name not in existing]
    schema.metadata.create_all(engine, tables=missing)
    created = [t.name for t in missing]
    epoch.ensure(engine)
    # Views are replaced only when one is missing: replacing takes metadata locks.
    if set(VIEWS) - set(inspector.get_view_names()):
        created += create_views(engine)
    return created


def open_existing(settings: Settings) -> Engine:
    """An engine on a kmdb database that exists already, for commands that must create nothing.

    Raises NoDatabase where there is none (no SQLite file, or no kmdb tables in the
    MySQL database) instead of making an empty one, as make_engine would.
    """
    url = settings.database_url
    where = mask_url(url)
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigError(f"DATABASE_URL {where} cannot be used ({exc}).") from None
    path = parsed.database or ""
    if (
        parsed.get_backend_name() == "sqlite"
        and path not in ("", ":memory:")
        and not path.startswith("file:")
        and not Path(path).is_file()
    ):
        raise NoDatabase(where)
    engine = make_engine(settings)
    existing = set(inspect(engine).get_table_names())
    if schema.revisions.name not in existing:
        engine.dispose()
        raise NoDatabase(where)
    lacking = [t.name for t in schema.metadata.sorted_tables if t.name not in existing]
    outdated = outdated_tables(engine)
    if lacking or outdated:
        engine.dispose()
        raise ConfigError(
            f"The kmdb database at {where} was made by an older kmdb (tables "
            f"{', '.join(lacking + outdated)} differ); run kmdb-import, which adds missing "
            "tables, or kmdb-flush, which empties the imported data and makes them anew."
        )
    return engine
