"""The load path: interning under concurrency, staged files, LOAD DATA LOCAL's guard."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import OperationalError

from kmdb import schema
from kmdb.db import create_schema, make_engine
from kmdb.load import Interner, load_staged, stage_rows
from kmdb.settings import Settings


def test_concurrent_interning_agrees(engine: Engine) -> None:
    create_schema(engine)
    names = [f"user-{i}" for i in range(3_000)]
    results: list[dict] = []
    errors: list[BaseException] = []

    def intern(part: list[str]) -> None:
        try:
            results.append(dict(Interner(engine, schema.users, "name").ids(part)))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    # Overlapping halves, the way two workers meet the same people.
    threads = [
        threading.Thread(target=intern, args=(names[i * 500 : i * 500 + 2_000],)) for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with engine.connect() as conn:
        stored = dict(conn.execute(select(schema.users.c.name, schema.users.c.id)).all())
    assert len(stored) == 3_000
    for found in results:
        assert all(stored[name] == id_ for name, id_ in found.items())


def test_staged_files_are_removed_and_rows_arrive(engine: Engine, tmp_path: Path) -> None:
    create_schema(engine)
    rows = [(1, "ab\tc", "n\\N", "x\ny", "2014-01-01 00:00:00")]
    staged = stage_rows(
        engine,
        schema.alias_sightings,
        ("revision", "line", "name1", "name2", "t"),
        [(1, 1, "ab\tc", "n\\N\0", "2014-01-01 00:00:00")],
        str(tmp_path),
    )
    with engine.begin() as conn:
        load_staged(conn, staged)
    staged.discard()
    assert list((tmp_path / "load").glob("*")) == []
    with engine.connect() as conn:
        got = conn.execute(
            select(schema.alias_sightings.c.name1, schema.alias_sightings.c.name2)
        ).one()
    assert tuple(got) == ("ab\tc", "n\\N\0")
    assert rows  # the literal above documents the awkward characters


def test_load_data_local_sends_only_kmdbs_own_files(mysql_url: str, tmp_path: Path) -> None:
    engine = make_engine(Settings(database_url=mysql_url))
    create_schema(engine)
    foreign = tmp_path / "secret.tsv"
    foreign.write_text("1\t1\ta\tb\t2014-01-01 00:00:00\n")
    with pytest.raises(OperationalError, match="kmdb refused to send"), engine.begin() as conn:
        conn.execute(text(f"LOAD DATA LOCAL INFILE '{foreign}' INTO TABLE alias_sightings"))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM alias_sightings")).scalar_one() == 0
