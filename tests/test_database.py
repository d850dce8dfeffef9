"""kmdb.load.database: a kmdb database made where missing, or opened where it must exist."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, text

from kmdb.errors import ConfigError, NoDatabase
from kmdb.load import schema
from kmdb.load.database import create_schema, open_existing, outdated_tables
from kmdb.load.views import VIEWS
from kmdb.settings import Settings


def test_what_is_missing_is_made_and_said_once(engine: Engine) -> None:
    made = create_schema(engine)
    assert set(made) == {t.name for t in schema.metadata.sorted_tables} | set(VIEWS)
    assert create_schema(engine) == []
    with engine.begin() as conn:
        conn.execute(text("DROP VIEW named_users"))
    assert create_schema(engine) == VIEWS  # a missing view: all are made again


def _outdated_events(engine: Engine) -> None:
    """events as an older kmdb made it: without the column identity_id."""
    with engine.begin() as conn:
        conn.execute(text("DROP VIEW IF EXISTS named_events"))
        conn.execute(text("DROP VIEW IF EXISTS named_properties"))
        conn.execute(text("DROP TABLE events"))
        conn.execute(text("CREATE TABLE events (id BIGINT PRIMARY KEY, t DATETIME, n INTEGER)"))


def test_an_older_kmdbs_tables_are_refused_or_made_anew_by_a_flush(engine: Engine) -> None:
    create_schema(engine)
    _outdated_events(engine)
    assert outdated_tables(engine) == ["events"]
    with pytest.raises(
        ConfigError, match="^The tables events were made by an older kmdb; run kmdb-flush"
    ):
        create_schema(engine)
    assert "events" in create_schema(engine, rebuild=True)
    assert outdated_tables(engine) == []
    columns = {c["name"] for c in inspect(engine).get_columns("events")}
    assert "identity_id" in columns


def test_opening_needs_a_kmdb_database_and_makes_none(settings: Settings, tmp_path: Path) -> None:
    if settings.database_url.startswith("sqlite"):
        missing = settings.replace(database_url=f"sqlite:///{tmp_path / 'none.sqlite3'}")
        with pytest.raises(NoDatabase):
            open_existing(missing)
        assert not (tmp_path / "none.sqlite3").exists()
    with pytest.raises(NoDatabase):  # a database without kmdb's tables
        open_existing(settings)
    from kmdb.load.engine import make_engine

    engine = make_engine(settings)
    create_schema(engine)
    open_existing(settings).dispose()
    _outdated_events(engine)
    engine.dispose()
    with pytest.raises(ConfigError, match=r"was made by an older kmdb \(tables events differ\)"):
        open_existing(settings)


def test_a_url_that_cannot_be_read_is_one_sentence() -> None:
    with pytest.raises(ConfigError, match="^DATABASE_URL .* cannot be used"):
        open_existing(Settings(database_url="not a url"))
