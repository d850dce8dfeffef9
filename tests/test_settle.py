"""kmdb.load.settle: people recomputed from aliases, rows re-pointed to canonical identities."""

from __future__ import annotations

import random
import re
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text

from kmdb.extract.local import LocalSource
from kmdb.load.database import create_schema
from kmdb.load.engine import make_engine
from kmdb.load.flush import flush
from kmdb.load.settle import Settled, settle
from kmdb.pipeline.import_pass import import_revision
from kmdb.pipeline.scan_pass import SCAN_MERGE_MIN, scan_revision
from kmdb.pipeline.steps import Importer, Prepared
from kmdb.sample import write_sample
from kmdb.settings import Settings
from kmdb.transform.parse import Record, parse_line
from tests.helpers import (
    ANON_B_AND_ZED,
    aliases_a_scan_merges,
    export_on_mariadb,
    line,
    run_import,
    write_export,
)
from tests.model import assert_same, dump, expected, read_export


def test_transitive_aliases_across_files_and_runs(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    write_export(folder, ANON_B_AND_ZED)
    run_import(engine, folder, settings)
    result = dump(engine)
    assert {(e[1], e[2]) for e in result.events} == {
        ("visited", "anon-b"),
        ("paid", "anon-b"),
        ("visited", "zed"),
    }
    # A later run brings a numeric account that joins bob's person: it becomes canonical,
    # and so does the link through "zed".
    write_export(
        folder, {9: [line(_p="42", _p2="bob@x", _t=300), line(_p2="zed", _p="42", _t=301)]}
    )
    assert run_import(engine, folder, settings) == [9]
    result = dump(engine)
    assert {e[2] for e in result.events} == {"42"}
    assert {s[1] for s in result.sets} == {"42"}
    assert result.aliases == {
        ("anon-b", "bob@x", "1970-01-01 00:03:20"),
        ("42", "bob@x", "1970-01-01 00:05:00"),
        ("42", "zed", "1970-01-01 00:05:01"),
    }
    assert_same(result, expected(read_export(folder)))


def test_a_settle_recomputes_people_from_aliases_that_scans_merged(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    # A scan folds its sightings into aliases itself; the settle after it must still
    # see that people changed, even when it finds no sightings left, and a settle
    # with nothing new must leave people alone.
    folder = write_export(tmp_path / "export", {1: aliases_a_scan_merges()})
    create_schema(engine)
    source = LocalSource(folder)
    assert scan_revision(engine, source, 1, settings) == SCAN_MERGE_MIN
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM alias_sightings")).scalar() == 0
        assert conn.execute(text("SELECT COUNT(*) FROM aliases")).scalar() == SCAN_MERGE_MIN
    first = settle(engine)
    assert (first.sightings, first.people_changed) == (0, SCAN_MERGE_MIN)
    again = settle(engine)
    assert again.people_changed == 0
    import_revision(engine, source, 1, settings)
    settle(engine)
    # The event of user-0@x is anon-0's, the lower of the two names.
    assert {e[2] for e in dump(engine).events} == {"anon-0"}


def test_settling_in_small_pages_gives_the_same_people(
    engine: Engine, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sightings are merged a page at a time; a pair seen again on a later page,
    # earlier in time, must move its alias's time back.
    monkeypatch.setattr("kmdb.load.settle.PAGE", 7)
    folder = tmp_path / "export"
    write_sample(folder, 2_000, seed=9, lines_per_revision=1_000)
    pairs = [
        (r.p, r.p2)
        for raw in (folder / "revisions" / "1.json").read_bytes().splitlines()
        if isinstance(r := parse_line(raw), Record) and r.kind == "alias"
    ][:20]
    (folder / "revisions" / "3.json").write_bytes(
        b"".join(line(_p=p, _p2=p2, _t=1) + b"\n" for p, p2 in pairs)
    )
    run_import(engine, folder, settings)
    wanted = expected(read_export(folder))
    assert_same(dump(engine), wanted)
    assert len(wanted.aliases) > 7 * 10
    assert sum(t == "1970-01-01 00:00:01" for *_, t in dump(engine).aliases) >= 15


IDENTITIES = ["1", "2", "07", "7", "a", "b", "c", "B", "b ", "é"]


record = st.one_of(
    st.builds(
        lambda p, t, n, v: line(_n=n, _p=p, _t=t, prop=v),
        st.sampled_from(IDENTITIES),
        st.integers(0, 50),
        st.sampled_from(["x", "y"]),
        st.integers(0, 3),
    ),
    st.builds(
        lambda p, t: line(_p=p, _t=t, plan="gold"), st.sampled_from(IDENTITIES), st.integers(0, 50)
    ),
    st.builds(
        lambda p, p2, t: line(_p=p, _p2=p2, _t=t),
        st.sampled_from(IDENTITIES),
        st.sampled_from(IDENTITIES),
        st.integers(0, 50),
    ),
    st.just(b"{broken"),
)


@hsettings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    lines=st.lists(record, min_size=1, max_size=30),
    cuts=st.lists(st.integers(0, 30), max_size=4),
    seed=st.integers(0, 99),
)
def test_any_order_and_split_gives_the_same_rows(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes], cuts: list[int], seed: int
) -> None:
    folder = tmp_path_factory.mktemp("export")
    bounds = sorted({0, len(lines), *(min(c, len(lines)) for c in cuts)})
    revisions = {
        i + 1: lines[a:b] for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)) if b > a
    }
    write_export(folder, revisions)
    engine = create_engine(f"sqlite:///{folder / 'db.sqlite3'}")
    flush(engine)
    order = list(revisions)
    rng = random.Random(seed)
    rng.shuffle(order)
    source = LocalSource(str(folder))
    settings = Settings(batch_size=rng.randint(1, 5))
    for number in order:
        import_revision(engine, source, number, settings)
        if rng.random() < 0.5:
            settle(engine)
    settle(engine)
    # The contract numbers lines per file; the model needs the same files.
    assert_same(dump(engine), expected(revisions))


# --- Settles whose cost follows what changed ------------------------------------------


def _people(engine: Engine) -> dict[str, str | None]:
    with engine.connect() as conn:
        return dict(
            conn.execute(
                text(
                    "SELECT u.name, c.name FROM users u LEFT JOIN users c ON c.id = u.canonical_id"
                )
            ).all()
        )


def _rows(engine: Engine) -> set[tuple]:
    with engine.connect() as conn:
        return {
            (table, *row)
            for table in ("events", "properties")
            for row in conn.execute(text(f"SELECT id, user_id, identity_id FROM {table}")).all()
        }


ALIAS_BATCH = st.lists(
    st.tuples(st.sampled_from(IDENTITIES), st.sampled_from(IDENTITIES)), min_size=1, max_size=6
)


@hsettings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(batches=st.lists(ALIAS_BATCH, min_size=1, max_size=5), data=st.data())
def test_alias_batches_settled_one_by_one_give_the_people_and_rows_of_a_full_settle(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, batches: list, data: st.DataObject
) -> None:
    # Each batch is a revision of alias lines, with an event and a property of every
    # identity, imported and settled on its own: incremental settles must leave
    # exactly what one settle from the whole aliases table (kmdb-realias) computes.
    folder = tmp_path_factory.mktemp("export")
    revisions = {
        i + 1: [line(_p=p, _p2=p2, _t=i * 10 + j) for j, (p, p2) in enumerate(batch)]
        + [line(_n="seen", _p=p, _t=i * 10, v=str(i)) for p, _ in batch]
        + [line(_p=p2, _t=i * 10, plan="x") for _, p2 in batch]
        for i, batch in enumerate(batches)
    }
    write_export(folder, revisions)
    engine = make_engine(Settings(database_url=database_url, tmp_dir=str(folder / "tmp")))
    try:
        flush(engine)
        source = LocalSource(str(folder))
        settings = Settings(batch_size=data.draw(st.integers(1, 5)))
        for number in revisions:
            import_revision(engine, source, number, settings)
            settle(engine)
        people, rows = _people(engine), _rows(engine)
        full = settle(engine, full=True)
        assert (full.people_changed, full.events_moved, full.properties_moved) == (0, 0, 0)
        assert (_people(engine), _rows(engine)) == (people, rows)
        assert_same(dump(engine), expected(revisions))
    finally:
        engine.dispose()


def _settle_writing_rows(engine: Engine) -> tuple[Settled, list[str]]:
    """Settle, and return the UPDATE and DELETE statements on events and properties it ran."""
    seen: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        words = statement.lstrip().split(None, 1)
        if (
            words
            and words[0].upper() in ("UPDATE", "DELETE")
            and re.search(r"\b(events|properties)\b", statement)
        ):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    try:
        return settle(engine), seen
    finally:
        event.remove(engine, "before_cursor_execute", before)


def test_a_settle_with_nothing_new_writes_no_rows(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = write_export(
        tmp_path / "export",
        {
            1: [
                line(_p="anon", _p2="bob@x", _t=1),
                line(_p="carol", _p2="bob@x", _t=1),
                line(_n="visited", _p="anon", _t=2),
                line(_n="visited", _p="bob@x", _t=3, url="y"),
            ]
        },
    )
    run_import(engine, folder, settings)
    source = LocalSource(str(folder))
    nothing, writes = _settle_writing_rows(engine)
    assert (nothing.new_aliases, nothing.people_changed, nothing.events_moved) == (0, 0, 0)
    assert writes == []
    # A new alias within a person changes nobody's canonical id: no row is touched either.
    write_export(folder, {2: [line(_p="carol", _p2="anon", _t=0)]})
    scan_revision(engine, source, 2, settings)
    within, writes = _settle_writing_rows(engine)
    assert (within.new_aliases, within.people_changed, writes) == (1, 0, [])
    # One that merges two people moves rows, through the changed users only.
    write_export(folder, {3: [line(_p="7", _p2="bob@x", _t=5)]})
    scan_revision(engine, source, 3, settings)
    merged, writes = _settle_writing_rows(engine)
    assert (merged.people_changed, merged.events_moved, merged.properties_moved) == (3, 2, 1)
    assert len(writes) == 2
    assert {e[2] for e in dump(engine).events} == {"7"}


def test_an_import_that_read_canonical_ids_before_a_settle_repoints_its_own_rows(
    engine: Engine, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Revision 2 is imported by a job that read anon's canonical id (none) before a
    # settle of another import (revision 3, anon = 42) changed it; its commit comes
    # after that settle, so it must move its own rows to 42.
    revisions = {
        1: [line(_n="a", _p="anon", _t=1)],
        2: [line(_n="b", _p="anon", _t=2, k="v"), line(_p="anon", _t=3, plan="x")],
        3: [line(_p="42", _p2="anon", _t=4)],
    }
    folder = write_export(tmp_path / "export", revisions)
    create_schema(engine)
    source = LocalSource(str(folder))
    import_revision(engine, source, 1, settings)
    settle(engine)
    scan_revision(engine, source, 3, settings)
    original = Importer._commit
    settled = []

    def settle_first(self: Importer, conn: Connection, prepared: Prepared) -> None:
        if not settled:
            settled.append(settle(engine))
        original(self, conn, prepared)

    monkeypatch.setattr(Importer, "_commit", settle_first)
    import_revision(engine, source, 2, settings)
    assert settled[0].people_changed == 1
    assert_same(dump(engine), expected(revisions))


@pytest.mark.parametrize("when", ["before-its-rows", "after-its-rows"])
def test_a_settle_interleaved_with_an_import_transaction_leaves_rows_right(
    mysql_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    # On MariaDB, a settle that changes anon's person runs while an import's transaction
    # is open: either it re-points rows after the import wrote its own (and waits for
    # that commit), or before them (and the import, blocked by its locks until it
    # commits, sees the new generation and re-points them itself).
    revisions = {
        1: [line(_n="a", _p="anon", _t=1)],
        2: [line(_n="b", _p="anon", _t=2, k="v"), line(_p="anon", _t=3, plan="x")],
        3: [line(_p="42", _p2="anon", _t=4)],
    }
    engine, settings, source = export_on_mariadb(mysql_url, tmp_path, revisions)
    try:
        import_revision(engine, source, 1, settings)
        settle(engine)
        scan_revision(engine, source, 3, settings)
        repointed = threading.Event()
        results: list[object] = []

        def settle_in_thread() -> threading.Thread:
            def run() -> None:
                try:
                    results.append(settle(engine))
                except BaseException as exc:
                    results.append(exc)
                    repointed.set()

            thread = threading.Thread(target=run)
            thread.start()
            return thread

        threads: list[threading.Thread] = []
        if when == "before-its-rows":
            from kmdb.load import settle as settle_module

            bump = settle_module._next_generation

            def slow_bump(conn: object) -> None:
                repointed.set()
                time.sleep(1)  # holding its locks: the import's rows wait for its commit
                bump(conn)  # type: ignore[arg-type]

            monkeypatch.setattr(settle_module, "_next_generation", slow_bump)
            original_commit = Importer._commit

            def commit(self: Importer, conn: Connection, prepared: Prepared) -> None:
                if not threads:
                    threads.append(settle_in_thread())
                    repointed.wait(30)
                original_commit(self, conn, prepared)

            monkeypatch.setattr(Importer, "_commit", commit)
        else:
            original_own = Importer._repoint_own

            def own(self: Importer, conn: object, ids: dict) -> None:
                if not threads:
                    threads.append(settle_in_thread())
                    time.sleep(1)  # the settle meets this transaction's rows meanwhile
                original_own(self, conn, ids)  # type: ignore[arg-type]

            monkeypatch.setattr(Importer, "_repoint_own", own)
        import_revision(engine, source, 2, settings)
        for thread in threads:
            thread.join(60)
        assert len(results) == 1 and not isinstance(results[0], BaseException), results
        assert results[0].people_changed == 1  # type: ignore[attr-defined]
        assert_same(dump(engine), expected(revisions))
    finally:
        engine.dispose()


def test_realias_recomputes_every_person_and_row(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = write_export(
        tmp_path / "export",
        {1: [line(_p="anon", _p2="bob@x", _t=1), line(_n="visited", _p="bob@x", _t=2)]},
    )
    run_import(engine, folder, settings)
    assert {e[2] for e in dump(engine).events} == {"anon"}
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM aliases"))
    # An alias removed by hand: a plain settle sees nothing new, kmdb-realias splits them.
    assert settle(engine).people_changed == 0
    assert {e[2] for e in dump(engine).events} == {"anon"}
    realiased = settle(engine, full=True)
    assert (realiased.people_changed, realiased.events_moved) == (1, 1)
    assert {e[2] for e in dump(engine).events} == {"bob@x"}


@pytest.mark.parametrize(
    ("table", "index"),
    [("users", "users_canonical"), ("people_changes", "people_changes_generation")],
)
def test_a_database_without_an_index_of_an_older_kmdb_gets_it(
    engine: Engine, settings: Settings, tmp_path: Path, table: str, index: str
) -> None:
    create_schema(engine)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text(f"DROP INDEX {index}"))
        else:
            conn.execute(text(f"ALTER TABLE {table} DROP INDEX {index}"))
    assert settle(engine).indexes_built == 1
    with engine.connect() as conn:
        assert index in {ix["name"] for ix in inspect(conn).get_indexes(table)}
