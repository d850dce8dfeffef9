"""kmdb.reports.stream: how the reports read events and properties (the covering indexes,
person or name order, texts cut by MySQL, ids too big for a code), checked against the
independent oracle."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, event, inspect

from kmdb import reports
from kmdb.load import indexes
from kmdb.load.database import create_schema
from kmdb.load.engine import make_engine
from kmdb.reports import stream
from kmdb.settings import Settings
from tests import reports_oracle as oracle
from tests.helpers import imported_world, same_report


def test_people_whose_rows_do_not_fit_one_text_are_read_row_by_row(
    mysql_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(database_url=mysql_url, tmp_dir=str(tmp_path / "tmp"))
    engine = make_engine(settings)
    world = imported_world(engine, settings, tmp_path, 12)
    # MySQL cuts a GROUP_CONCAT at group_concat_max_len; a cut text must not lose rows.
    monkeypatch.setattr(stream, "GROUP_CONCAT_MAX", "40")
    got = reports.funnel(engine, ["a", "b", "c"], by="variant")
    assert got == oracle.funnel(world, ["a", "b", "c"], by="variant")
    got = reports.revenue(engine, property="amount", period="week", churn_days=7)
    assert got == oracle.revenue(world, "amount", "week", 7)
    engine.dispose()


def _every_report(engine: Engine, world: oracle.World) -> None:
    """Each report on a few options, compared with the oracle."""
    for from_, to in [(None, None), ("2013-03-15", "2013-04-30")]:
        for steps, options in [
            (["a", "b", "c", "d"], {"mode": "skips", "by": "variant", "attribution": "at-entry"}),
            (["b", "a", "b"], {}),
        ]:
            want = oracle.funnel(
                world,
                steps,
                skips=options.get("mode") == "skips",
                by=options.get("by"),
                attribution=options.get("attribution", "first"),
                from_=from_,
                to=to,
            )
            assert reports.funnel(engine, steps, **options, from_=from_, to=to) == want
        options = {"period": "day", "bucket": "day", "buckets": 20, "count": "every"}
        want = oracle.cohort(world, "a", "b", **options, from_=from_, to=to)
        assert reports.cohort(engine, "a", "b", **options, from_=from_, to=to) == want
        want = oracle.cohort(world, "c", "c", from_=from_, to=to)
        assert reports.cohort(engine, "c", "c", from_=from_, to=to) == want
        want = oracle.revenue(world, "amount", "week", 7, from_=from_, to=to)
        assert (
            reports.revenue(
                engine, property="amount", period="week", churn_days=7, from_=from_, to=to
            )
            == want
        )
        same_report(
            reports.abtest(engine, property="variant", goal="d", from_=from_, to=to),
            oracle.abtest(world, "variant", "d", from_=from_, to=to),
        )


@pytest.mark.parametrize("share", [0.0, 2.0])
def test_events_read_in_person_or_in_name_order_give_the_same_reports(
    engine: Engine,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    share: float,
) -> None:
    world = imported_world(engine, settings, tmp_path, 10)
    # A share of 0 makes every set of names many enough to read all events in person
    # order; a share above 1 makes none, so events are read by name and sorted.
    monkeypatch.setattr(stream, "BY_PERSON_SHARE", share)
    statements: list[str] = []
    listen = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listen)
    try:
        _every_report(engine, world)
    finally:
        event.remove(engine, "before_cursor_execute", listen)
    grouped = [s for s in statements if "GROUP BY user_id" in s]
    used, unused = (
        (stream.BY_PERSON, stream.BY_NAME) if share == 0 else (stream.BY_NAME, stream.BY_PERSON)
    )
    assert any(used in s for s in grouped if "FROM events" in s)
    assert not any(unused in s for s in grouped)
    assert all(stream.BY_KEY in s for s in grouped if "FROM properties" in s)


def test_a_database_with_an_older_kmdbs_indexes_gives_the_same_reports_and_gets_the_new_ones(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    world = imported_world(engine, settings, tmp_path, 11)
    older = {
        "events": {"events_user_t": "user_id, t", "events_n_t": "n, t"},
        "properties": {"properties_key_t": '"key", t'},
    }
    new = {"events": [stream.BY_PERSON, stream.BY_NAME], "properties": [stream.BY_KEY]}
    mysql = engine.dialect.name != "sqlite"
    with engine.begin() as conn:
        for table, names in new.items():
            for name in names:
                conn.exec_driver_sql(
                    f"DROP INDEX {name} ON {table}" if mysql else f"DROP INDEX {name}"
                )
            for name, columns in older[table].items():
                columns = columns.replace('"', "`") if mysql else columns
                conn.exec_driver_sql(f"CREATE INDEX {name} ON {table} ({columns})")
    # Without the indexes it names, a report reads the tables without hints.
    _every_report(engine, world)
    # The settle of the next import builds them, and drops the ones they replace.
    assert sorted(indexes.build(engine)) == sorted(n for names in new.values() for n in names)
    with engine.connect() as conn:
        assert indexes.missing(conn) == {}
    found = {
        table: sorted(ix["name"] for ix in inspect(engine).get_indexes(table)) for table in new
    }
    assert found == {
        "events": sorted(new["events"]),
        "properties": sorted([stream.BY_KEY, "properties_event", "properties_user_key_t"]),
    }
    _every_report(engine, world)


def test_event_ids_too_big_for_a_code_are_numbered_by_their_place(
    engine: Engine, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = imported_world(engine, settings, tmp_path, 13)
    # An id times SPAN must fit 64 bits; past LARGEST_ID the names are numbered 1, 2, ...
    monkeypatch.setattr(stream, "LARGEST_ID", 0)
    _every_report(engine, world)


def test_an_import_into_empty_tables_puts_off_an_older_kmdbs_indexes_too(engine: Engine) -> None:
    create_schema(engine)
    mysql = engine.dialect.name != "sqlite"
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"DROP INDEX {stream.BY_KEY} ON properties" if mysql else f"DROP INDEX {stream.BY_KEY}"
        )
        conn.exec_driver_sql("CREATE INDEX properties_key_t ON properties (t)")
    assert indexes.put_off(engine)
    names = {ix["name"] for ix in inspect(engine).get_indexes("properties")}
    assert "properties_key_t" not in names and stream.BY_KEY not in names
    indexes.build(engine)
    names = {ix["name"] for ix in inspect(engine).get_indexes("properties")}
    assert stream.BY_KEY in names and "properties_key_t" not in names
