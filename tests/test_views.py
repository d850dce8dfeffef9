"""kmdb.load.views: views that name what the tables hold by integer keys, on SQLite and MariaDB.

tests/test_cookbook.py checks them row by row on a sample, through the cookbook's recipes.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, inspect, text

from kmdb.load.database import create_schema
from kmdb.load.views import VIEWS, create_views, view_sql
from kmdb.settings import Settings
from tests.helpers import line, run_import, write_export


def test_events_properties_and_people_are_named(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = write_export(
        tmp_path / "export",
        {
            1: [
                line(_n="visited", _p="anon", _t=100, url="/home"),
                line(_p="anon", _p2="bob@x", _t=101),
                line(_p="bob@x", _t=102, plan="gold"),
            ]
        },
    )
    run_import(engine, folder, settings)
    with engine.connect() as conn:
        events = conn.execute(text("SELECT event, person, identity FROM named_events")).all()
        props = conn.execute(
            text("SELECT property, value, person, identity, event FROM named_properties")
        ).all()
        users = conn.execute(text("SELECT name, person FROM named_users ORDER BY name")).all()
    # anon is canonical (the lower of two names that are not numbers).
    assert [tuple(r) for r in events] == [("visited", "anon", "anon")]
    assert sorted(tuple(r) for r in props) == [
        ("plan", "gold", "anon", "bob@x", None),
        ("url", "/home", "anon", "anon", "visited"),
    ]
    assert [tuple(r) for r in users] == [("anon", "anon"), ("bob@x", "anon")]


def test_views_are_made_again_without_harm(engine: Engine) -> None:
    create_schema(engine)
    assert set(VIEWS) <= set(inspect(engine).get_view_names())
    assert create_views(engine) == VIEWS
    assert create_views(engine) == VIEWS
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM named_users")).scalar_one() == 0


def test_reserved_names_are_quoted_for_each_database(engine: Engine) -> None:
    sql = view_sql(engine, "named_properties")
    quoted = "`keys`" if engine.dialect.name == "mysql" else '"keys"'
    assert f"JOIN {quoted} k" in sql and "{" not in sql
