"""The reports against an independent computation from the contract, on SQLite and MariaDB."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, event, inspect

from kmdb import reports
from kmdb.errors import ReportError
from kmdb.extract.local import LocalSource
from kmdb.load import indexes
from kmdb.load.database import create_schema
from kmdb.load.engine import make_engine
from kmdb.pipeline.discovery import new_revisions
from kmdb.pipeline.inline import import_inline
from kmdb.reports import stream
from kmdb.reports.common import Periods, amount, day_number, money
from kmdb.settings import Settings
from tests import reports_oracle as oracle

RANGES = [
    (None, None),
    ("2013-03-10", None),
    (None, "2013-04-20"),
    ("2013-03-15", "2013-04-30"),
    ("2013-04-01", "2013-04-01"),
]


def imported(engine: Engine, settings: Settings, tmp_path: Path, seed: int) -> oracle.World:
    """A generated export imported through kmdb's own import; returns what it holds."""
    world = oracle.generate(seed)
    source = LocalSource(str(oracle.write(world, tmp_path / "export")))
    create_schema(engine)
    import_inline(engine, source, settings, new_revisions(engine, source, settings))
    return world


def same(got: dict, want: dict) -> None:
    """Equal, with certainties compared to the 6th place (Φ computed two ways)."""
    if got.get("report") == "abtest":
        for variant in want["variants"]:
            if variant["certainty"] is not None:
                variant["certainty"] = pytest.approx(variant["certainty"], abs=2e-6)
    assert got == want


@pytest.mark.parametrize("seed", [1, 2])
def test_funnel_matches_the_contract(
    engine: Engine, settings: Settings, tmp_path: Path, seed: int
) -> None:
    world = imported(engine, settings, tmp_path, seed)
    cases = [
        (["a", "b"], {}),
        (["a", "b", "c"], {}),
        (["a", "b", "c", "d"], {"skips": True}),
        (["b", "a", "b", "a"], {}),
        (["a", "a", "a"], {}),
        (["c", "d", "a"], {"skips": True}),
        (["a", "b", "c"], {"by": "variant", "attribution": "first"}),
        (["a", "c"], {"by": "variant", "attribution": "last"}),
        (["a", "b"], {"by": "variant", "attribution": "first-in-range"}),
        (["d", "b"], {"by": "variant", "attribution": "last-in-range", "skips": True}),
        (["a", "b", "d"], {"by": "variant", "attribution": "at-entry"}),
        (["a", "b"], {"by": "amount", "attribution": "at-entry"}),
    ]
    deep = 0
    for from_, to in RANGES:
        for steps, options in cases:
            want = oracle.funnel(world, steps, from_=from_, to=to, **options)
            got = reports.funnel(
                engine,
                steps,
                mode="skips" if options.get("skips") else "strict",
                by=options.get("by"),
                attribution=options.get("attribution", "first"),
                from_=from_,
                to=to,
            )
            assert got == want, (steps, options, from_, to)
            deep += sum(s["people"][-1] for s in want["segments"])
    assert deep > 0


@pytest.mark.parametrize("seed", [3, 4])
def test_cohort_matches_the_contract(
    engine: Engine, settings: Settings, tmp_path: Path, seed: int
) -> None:
    world = imported(engine, settings, tmp_path, seed)
    cases = [
        ("a", "b", {}),
        ("a", "a", {"period": "day", "bucket": "day", "buckets": 10}),
        ("b", "c", {"period": "month", "bucket": "day", "buckets": 30, "count": "every"}),
        ("c", "a", {"period": "week", "bucket": "week", "buckets": 3, "count": "every"}),
        ("d", "d", {"period": "month", "bucket": "week", "buckets": 1}),
    ]
    returns = 0
    for from_, to in RANGES:
        for first, back, options in cases:
            want = oracle.cohort(world, first, back, from_=from_, to=to, **options)
            got = reports.cohort(engine, first, back, from_=from_, to=to, **options)
            assert got == want, (first, back, options, from_, to)
            returns += sum(sum(c["returned"]) for c in want["cohorts"])
    assert returns > 0


@pytest.mark.parametrize("seed", [5, 6])
def test_revenue_matches_the_contract(
    engine: Engine, settings: Settings, tmp_path: Path, seed: int
) -> None:
    world = imported(engine, settings, tmp_path, seed)
    for from_, to in RANGES:
        for period in ("day", "week", "month"):
            for churn in (1, 7, 30):
                want = oracle.revenue(world, "amount", period, churn, from_=from_, to=to)
                got = reports.revenue(
                    engine, property="amount", period=period, churn_days=churn, from_=from_, to=to
                )
                assert got == want, (period, churn, from_, to)
    whole = reports.revenue(engine, property="amount", churn_days=7)
    assert whole["total"]["not_numbers"] > 0
    assert any(p["refunds"] != "0.00" for p in whole["periods"])
    assert any(p["churned"] for p in whole["periods"])


@pytest.mark.parametrize("seed", [7, 8])
def test_abtest_matches_the_contract(
    engine: Engine, settings: Settings, tmp_path: Path, seed: int
) -> None:
    world = imported(engine, settings, tmp_path, seed)
    for from_, to in RANGES:
        for goal in ("a", "b", "d"):
            want = oracle.abtest(world, "variant", goal, from_=from_, to=to)
            got = reports.abtest(engine, property="variant", goal=goal, from_=from_, to=to)
            same(got, want)
            if len(want["variants"]) > 1:
                other = want["variants"][-1]["variant"]
                want = oracle.abtest(world, "variant", goal, baseline=other, from_=from_, to=to)
                got = reports.abtest(
                    engine, property="variant", goal=goal, baseline=other, from_=from_, to=to
                )
                same(got, want)


def test_unknown_names_give_empty_reports_that_name_them(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    imported(engine, settings, tmp_path, 9)
    got = reports.funnel(engine, ["a", "nope"])
    assert got["missing"] == ["nope"]
    assert got["segments"] == [
        {"value": None, "people": [0, 0], "from_previous": [0.0, 0.0], "overall": [0.0, 0.0]}
    ]
    got = reports.funnel(engine, ["a", "b"], by="no such key")
    assert (got["segments"], got["missing"]) == ([], ["no such key"])
    got = reports.cohort(engine, "zz", "a")
    assert (got["cohorts"], got["missing"]) == ([], ["zz"])
    got = reports.revenue(engine)
    assert got["missing"] == ["billing amount"]
    assert got["periods"] == []
    assert got["total"] == {
        "revenue": "0.00",
        "paying": 0,
        "revenue_per_paying": "0.00",
        "not_numbers": 0,
    }
    got = reports.abtest(engine, property="nokey", goal="nogoal")
    assert (got["variants"], got["missing"]) == ([], ["nokey", "nogoal"])
    # A report whose names exist has no "missing" field: its JSON is the contract's shape.
    assert "missing" not in reports.funnel(engine, ["a", "b"])


def test_bad_options_are_one_sentence(engine: Engine, settings: Settings, tmp_path: Path) -> None:
    create_schema(engine)
    bad = [
        (lambda: reports.funnel(engine, ["a"]), "A funnel needs at least two steps."),
        (
            lambda: reports.funnel(engine, ["a", "b"], from_="2013-02-02", to="2013-02-01"),
            "--to 2013-02-01 is before --from 2013-02-02; give the earlier day first.",
        ),
        (
            lambda: reports.cohort(engine, "a", "b", period="year"),
            "--period 'year' is not one of day, week, month.",
        ),
        (
            lambda: reports.cohort(engine, "a", "b", bucket="month"),
            "--bucket 'month' is not one of day, week.",
        ),
        (
            lambda: reports.cohort(engine, "a", "b", buckets=0),
            "--buckets 0 must be a whole number of at least 1.",
        ),
        (
            lambda: reports.revenue(engine, period="quarter"),
            "--period 'quarter' is not one of day, week, month.",
        ),
        (
            lambda: reports.funnel(engine, ["a", "b"], from_="yesterday"),
            "--from 'yesterday' is not a day like 2013-03-31.",
        ),
        (
            lambda: reports.funnel(engine, ["a", "b"], by="k", attribution="middle"),
            "--attribution 'middle' is not one of first, last, first-in-range, last-in-range, at-entry.",
        ),
    ]
    for call, message in bad:
        with pytest.raises(ReportError) as info:
            call()
        assert str(info.value) == message


def test_amounts_money_and_periods() -> None:
    assert [amount(v) is not None for v in (" -12.50 ", "7", "0.0")] == [True] * 3
    bad = ("1.", ".5", "+4", "1e3", "", " ", "\t5", "5\n", "1,5", "- 5", "٣", "--1")
    assert [amount(v) for v in bad] == [None] * len(bad)
    assert [money(amount(v)) for v in ("0.005", "-0.005", "2.675", "-0.004", "10")] == [
        "0.01",
        "-0.01",
        "2.68",
        "0.00",
        "10.00",
    ]
    import datetime as dt

    origin = day_number(dt.date(2013, 1, 15))
    months = Periods("month", origin, True)
    assert months.listed(origin, day_number(dt.date(2013, 3, 2))) == [
        origin,
        day_number(dt.date(2013, 2, 1)),
        day_number(dt.date(2013, 3, 1)),
    ]
    weeks = Periods("week", origin, True)
    assert weeks.of(origin + 13) == origin + 7
    assert Periods("month", 0, False).after(day_number(dt.date(2013, 12, 1))) == day_number(
        dt.date(2014, 1, 1)
    )


def test_people_whose_rows_do_not_fit_one_text_are_read_row_by_row(
    mysql_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(database_url=mysql_url, tmp_dir=str(tmp_path / "tmp"))
    engine = make_engine(settings)
    world = imported(engine, settings, tmp_path, 12)
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
        same(
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
    world = imported(engine, settings, tmp_path, 10)
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
    world = imported(engine, settings, tmp_path, 11)
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
    world = imported(engine, settings, tmp_path, 13)
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
