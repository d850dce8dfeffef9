"""kmdb.load.filter_tables: the user's filter tables, read when an import starts and applied to it."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text

from kmdb.load.database import create_schema
from kmdb.sample import write_sample
from kmdb.settings import Settings
from kmdb.transform.parse import parse_line
from tests.helpers import run_import
from tests.model import assert_same, dump, expected, read_export


def test_filters_apply(engine: Engine, settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 3_000, seed=5, lines_per_revision=1_000)
    lines = read_export(folder)
    create_schema(engine)
    people = [r.p for raw in lines[1] if (r := parse_line(raw)) and hasattr(r, "p")]
    ignored = frozenset(people[:3])
    with engine.begin() as conn:
        for name in sorted(ignored):
            conn.execute(text("INSERT INTO ignored_users (name) VALUES (:n)"), {"n": name})
        conn.execute(
            text("INSERT INTO whitelisted_events (name) VALUES ('purchased'), ('signed up')")
        )
        conn.execute(text("INSERT INTO blacklisted_properties (name) VALUES ('url'), ('plan')"))
    run_import(engine, folder, settings)
    wanted = expected(
        lines,
        ignored=ignored,
        whitelist=frozenset({"purchased", "signed up"}),
        blacklist=frozenset({"url", "plan"}),
    )
    assert_same(dump(engine), wanted)
    assert {e[1] for e in wanted.events} == {"purchased", "signed up"}
