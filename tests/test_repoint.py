"""kmdb.load.repoint: older rows re-pointed beside an import, or by the next settle."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, event, text

from kmdb.extract.local import LocalSource
from kmdb.load import repoint, schema
from kmdb.load.database import create_schema
from kmdb.load.engine import is_mysql, make_engine
from kmdb.load.repoint import repoint_pending
from kmdb.load.settle import settle
from kmdb.orchestrate.graph import needs_settle
from kmdb.orchestrate.status import render, report
from kmdb.pipeline.import_pass import import_revision
from kmdb.pipeline.scan_pass import scan_revision
from kmdb.settings import Settings
from tests.helpers import ANON_B_AND_ZED, REDIS_URL, line, run_import, write_export
from tests.model import assert_same, dump, expected, read_export


def _first_run_then_aliases(engine: Engine, settings: Settings, tmp_path: Path) -> Path:
    """An imported run of anon-b's and zed's rows, then revision 9 scanned (not imported):
    its aliases make the numeric 42 the canonical identity of both."""
    folder = tmp_path / "export"
    write_export(folder, ANON_B_AND_ZED)
    run_import(engine, folder, settings)
    write_export(
        folder,
        {
            9: [
                line(_p="42", _p2="bob@x", _t=300),
                line(_p2="zed", _p="42", _t=301),
                line(_n="renewed", _p="zed", _t=302, price=9),
            ]
        },
    )
    scan_revision(engine, LocalSource(str(folder)), 9, settings)
    return folder


def _people_of_events(engine: Engine) -> list[tuple[str, str]]:
    sql = (
        "SELECT k.string, u.name FROM events e JOIN `keys` k ON k.id = e.n "
        "JOIN users u ON u.id = e.user_id"
    )
    if not is_mysql(engine):
        sql = sql.replace("`", '"')
    with engine.connect() as conn:
        return sorted((name, person) for name, person in conn.execute(text(sql)))


def _pending(engine: Engine) -> int | None:
    with engine.connect() as conn:
        return repoint.pending_since(conn)


def test_the_settle_before_an_import_leaves_older_rows_to_the_repoint_beside_it(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = _first_run_then_aliases(engine, settings, tmp_path)
    before = settle(engine, before_import=True)
    assert before.people_changed > 0 and before.events_moved == 0
    assert _pending(engine) is not None
    # What is left undone shows, and makes kmdb-import plan a settle even with nothing new.
    assert needs_settle(engine)
    shown = render(report(settings, engine, None))
    assert any(line.startswith("Older rows of people that the last settle") for line in shown)
    # Older rows still point at the old canonical identities; the import's own at 42.
    import_revision(engine, LocalSource(str(folder)), 9, settings)
    assert _people_of_events(engine) == [
        ("paid", "anon-b"),
        ("renewed", "42"),
        ("visited", "anon-b"),
        ("visited", "zed"),
    ]

    # visited and paid of anon-b, visited of zed; url and plan of anon-b.
    assert repoint_pending(engine) == (3, 2)
    assert _pending(engine) is None
    assert not needs_settle(engine)
    assert not report(settings, engine, None)["rows"]["rows_to_repoint"]
    assert repoint_pending(engine) == (0, 0)
    after = settle(engine)
    assert (after.people_changed, after.events_moved, after.properties_moved) == (0, 0, 0)
    assert_same(dump(engine), expected(read_export(folder)))


def test_a_first_imports_repoint_reads_no_changes_when_no_row_came_before_the_settle(
    engine: Engine, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On empty tables there is nothing older to move: the pending mark goes, and the
    changed users (every aliased one, on a first import) are not even staged."""
    folder = tmp_path / "export"
    write_export(folder, ANON_B_AND_ZED)
    write_export(folder, {9: [line(_p="42", _p2="anon-b", _t=300)]})
    create_schema(engine)
    for revision in (7, 8, 9):
        scan_revision(engine, LocalSource(str(folder)), revision, settings)
    assert settle(engine, before_import=True).people_changed > 0
    assert _pending(engine) is not None

    def staged(*_args: object) -> None:
        raise AssertionError("staged the changed users although no row was there to move")

    monkeypatch.setattr(repoint, "stage_pending", staged)
    assert repoint_pending(engine) == (0, 0)
    assert _pending(engine) is None
    monkeypatch.undo()
    for revision in (7, 8, 9):
        import_revision(engine, LocalSource(str(folder)), revision, settings)
    settle(engine)
    assert_same(dump(engine), expected(read_export(folder)))


def test_a_repoint_that_never_ran_is_done_by_the_next_settle(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = _first_run_then_aliases(engine, settings, tmp_path)
    settle(engine, before_import=True)
    import_revision(engine, LocalSource(str(folder)), 9, settings)
    # A settle before another import defers too, keeping the earliest generation pending.
    since = _pending(engine)
    settle(engine, before_import=True)
    assert _pending(engine) == since

    after = settle(engine)
    assert (after.people_changed, after.events_moved, after.properties_moved) == (0, 3, 2)
    assert _pending(engine) is None
    assert_same(dump(engine), expected(read_export(folder)))


def test_a_repoint_in_progress_does_not_hold_up_an_imports_rows(
    mysql_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What lets it run beside the imports: at READ COMMITTED its UPDATE locks the rows
    # it moves, not the ranges of user_id's index around them, where the import's new
    # rows (of the same people) go. At REPEATABLE READ this import waits, then fails.
    settings = Settings(database_url=mysql_url, redis_url=REDIS_URL, tmp_dir=str(tmp_path / "tmp"))
    engine = make_engine(settings)
    impatient = make_engine(settings)

    @event.listens_for(impatient, "connect")
    def _short_waits(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        with dbapi_conn.cursor() as cursor:
            cursor.execute("SET SESSION innodb_lock_wait_timeout = 3")

    try:
        folder = _first_run_then_aliases(engine, settings, tmp_path)
        settle(engine, before_import=True)
        failures: list[BaseException] = []

        def import_9() -> None:
            try:
                import_revision(impatient, LocalSource(str(folder)), 9, settings)
            except BaseException as exc:  # reported by the assertion below
                failures.append(exc)

        mark_done = repoint.done

        def import_before_done(conn: Connection) -> None:
            # The re-point's UPDATEs ran, its transaction is open: the import goes on.
            importing = threading.Thread(target=import_9)
            importing.start()
            importing.join(timeout=60)
            assert not importing.is_alive()
            mark_done(conn)

        monkeypatch.setattr(repoint, "done", import_before_done)
        assert repoint_pending(engine) == (3, 2)
        assert failures == []
        settle(engine)
        assert_same(dump(engine), expected(read_export(folder)))
    finally:
        impatient.dispose()
        engine.dispose()


def test_a_repoint_reads_only_the_changes_since_its_generation(engine: Engine) -> None:
    """Every change a settle ever logged stays in people_changes (an import may still
    need it); the re-point reaches the few since its generation by their index, so its
    cost follows the new changes, not the database's history."""
    create_schema(engine)
    with engine.begin() as conn:
        conn.execute(
            schema.people_changes.insert(),
            [{"user_id": i, "generation": 1} for i in range(1, 3001)]
            + [{"user_id": i, "generation": 2} for i in range(1, 6)],
        )
        if is_mysql(engine):
            conn.exec_driver_sql("ANALYZE TABLE people_changes")
    query = repoint.changed_since(1)
    sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        assert sorted(conn.execute(query).scalars()) == [1, 2, 3, 4, 5]
        if is_mysql(engine):  # the production database (SQLite's is the small embedded one)
            plan = conn.exec_driver_sql(f"EXPLAIN {sql}").mappings().one()
            assert (plan["key"], plan["type"]) == ("people_changes_generation", "range")
