"""kmdb.pipeline.steps: a chunk's steps, and its commit of rows and progress in one transaction."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from kmdb.errors import ConcurrentImport
from kmdb.extract.local import LocalSource
from kmdb.load import epoch, schema
from kmdb.load.database import create_schema
from kmdb.load.flush import flush
from kmdb.load.ledger import Part
from kmdb.pipeline.chunks import Segment
from kmdb.pipeline.scan_pass import scan_revisions
from kmdb.pipeline.steps import Importer, Prepared, Remembered
from kmdb.settings import Settings
from tests.helpers import line, write_export


def _chunk_of_two_files(engine: Engine, settings: Settings, folder: Path) -> Prepared:
    """A chunk with all of revision 1 (its lines and its end) and the first line of revision 2."""
    write_export(
        folder,
        {
            1: [line(_n="a", _p="u1", _t=1, x=1), line(_n="b", _p="u2", _t=2)],
            2: [line(_n="c", _p="u3", _t=3, y="z"), line(_n="d", _p="u1", _t=4)],
        },
    )
    source = LocalSource(str(folder))
    create_schema(engine)
    scan_revisions(engine, source, [1, 2], settings)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM revision_parts ORDER BY revision")).mappings()
        one, two = (Part.of(dict(row)) for row in rows)
    lines = {n: (folder / "revisions" / f"{n}.json").read_bytes().split(b"\n") for n in (1, 2)}
    return Importer(engine, settings).prepare(
        [
            Segment(one, 1, lines[1][:2], one.end_byte),
            Segment(one, 0, [], 0),
            Segment(two, 1, lines[2][:1], len(lines[2][0]) + 1),
        ]
    )


def _progress(engine: Engine) -> list[tuple]:
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                text(
                    "SELECT revision, lines_done, events, properties, status FROM revision_parts "
                    "ORDER BY revision"
                )
            )
        ]


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()


def test_a_chunk_moves_all_its_parts_in_one_commit_and_a_retry_writes_nothing_twice(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    prepared = _chunk_of_two_files(engine, settings, tmp_path / "export")
    chunk_importer = Importer(engine, settings)
    chunk_importer.commit(prepared)
    # A part that goes on after the chunk is marked running by it.
    assert _progress(engine) == [(1, 2, 2, 1, "done"), (2, 1, 1, 1, "running")]
    assert (_count(engine, "events"), _count(engine, "properties")) == (3, 2)
    # The same chunk again, as after a connection lost once its commit went through.
    chunk_importer.commit(prepared)
    assert _progress(engine) == [(1, 2, 2, 1, "done"), (2, 1, 1, 1, "running")]
    assert (_count(engine, "events"), _count(engine, "properties")) == (3, 2)


def test_a_chunk_leaves_a_part_that_failed_meanwhile_failed(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    prepared = _chunk_of_two_files(engine, settings, tmp_path / "export")
    # The stream fails a part whose unreadable rest it met while the chunk of its first
    # lines was loading: that chunk's commit must not mark it running again.
    with engine.begin() as conn:
        conn.execute(text("UPDATE revision_parts SET status = 'failed' WHERE revision = 2"))
    Importer(engine, settings).commit(prepared)
    assert _progress(engine) == [(1, 2, 2, 1, "done"), (2, 1, 1, 1, "failed")]


def test_a_chunk_whose_part_another_worker_moved_writes_nothing(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    prepared = _chunk_of_two_files(engine, settings, tmp_path / "export")
    with engine.begin() as conn:
        conn.execute(text("UPDATE revision_parts SET lines_done = 2 WHERE revision = 2"))
    with pytest.raises(ConcurrentImport, match=r"Revision 2 \(part 0\) was moved past"):
        Importer(engine, settings).commit(prepared)
    # Revision 1's move was in the same statement and transaction: it did not happen either.
    assert _progress(engine) == [(1, 0, 0, 0, "pending"), (2, 2, 0, 0, "pending")]
    assert (_count(engine, "events"), _count(engine, "properties")) == (0, 0)


def test_remembered_ids_are_kept_while_the_epoch_and_generation_stay(engine: Engine) -> None:
    create_schema(engine)
    remembered = Remembered(engine)
    with engine.connect() as conn:
        before = epoch.read(conn)
    remembered.hold_for(before)
    remembered.keys.ids(["signed up"])
    remembered.hold_for(before)  # the next job, nothing changed: kept
    assert set(remembered.keys.cache) == {"signed up"}
    flush(engine)
    with engine.connect() as conn:
        after = epoch.read(conn)
    # No settle ever changed people: only the epoch tells that the ids are void.
    assert after.generation == before.generation == 0
    assert after.epoch != before.epoch
    remembered.hold_for(after)
    assert remembered.keys.cache == {}


def test_a_database_without_an_epoch_keeps_nothing_from_job_to_job(engine: Engine) -> None:
    create_schema(engine)
    with engine.begin() as conn:
        conn.execute(schema.database_epoch.delete())
    remembered = Remembered(engine)
    Importer(engine, Settings(database_url=str(engine.url)), remembered).keys.ids(["signed up"])
    Importer(engine, Settings(database_url=str(engine.url)), remembered)
    assert remembered.keys.cache == {}
