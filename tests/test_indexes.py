"""Indexes of events and properties put off during a first import and built at its end."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import Engine, insert

from kmdb.extract.export import open_source
from kmdb.load import indexes, schema
from kmdb.load.database import create_schema
from kmdb.load.flush import flush
from kmdb.load.settle import settle
from kmdb.pipeline.inline import import_inline
from kmdb.sample import write_sample
from kmdb.settings import Settings
from tests.model import assert_same, dump, expected, read_export

ALL = sorted(str(ix.name) for t in indexes.PUT_OFF for ix in t.indexes)


def _missing(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(str(ix.name) for found in indexes.missing(conn).values() for ix in found)


def test_an_import_into_empty_tables_builds_their_indexes_at_its_end(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 3_000, seed=12, lines_per_revision=1_000)
    create_schema(engine)
    assert len(ALL) == 5 and _missing(engine) == []
    during: list[list[str]] = []
    import_inline(
        engine,
        open_source(str(folder), settings),
        settings,
        [1, 2, 3],
        on_revision=lambda _n: during.append(_missing(engine)),
    )
    assert during == [ALL, ALL, ALL]
    assert _missing(engine) == []
    assert_same(dump(engine), expected(read_export(folder)))

    # Into tables that hold rows, an import keeps the indexes all along.
    more = tmp_path / "more"
    write_sample(more, 1_000, seed=13, lines_per_revision=1_000, first_revision=4)
    during.clear()
    import_inline(
        engine,
        open_source(str(more), settings),
        settings,
        [4],
        on_revision=lambda _n: during.append(_missing(engine)),
    )
    assert during == [[]]


def test_a_settle_builds_put_off_indexes_once_rows_need_them(engine: Engine) -> None:
    create_schema(engine)
    assert indexes.put_off(engine)
    assert not indexes.put_off(engine)  # nothing left to drop
    assert _missing(engine) == ALL
    # The settle between the scans and the import: empty tables keep them put off.
    assert settle(engine, before_import=True).indexes_built == 0
    assert _missing(engine) == ALL
    with engine.begin() as conn:
        conn.execute(insert(schema.users).values(id=1, name="bob"))
        conn.execute(
            insert(schema.events).values(
                id=1, t=dt.datetime(2020, 1, 1), n=1, user_id=1, identity_id=1
            )
        )
    # Another import's first settle, with rows already in: its re-pointing needs them.
    assert settle(engine, before_import=True).indexes_built == 5
    assert _missing(engine) == []
    assert not indexes.put_off(engine)  # the tables hold rows
    assert _missing(engine) == []


def test_the_last_settle_builds_them_even_on_empty_tables(engine: Engine) -> None:
    create_schema(engine)
    indexes.put_off(engine)
    assert settle(engine).indexes_built == 5
    assert _missing(engine) == []


def test_flush_builds_indexes_an_unfinished_import_put_off(engine: Engine) -> None:
    create_schema(engine)
    indexes.put_off(engine)
    flush(engine)
    assert _missing(engine) == []
