"""kmdb.reports: the package's functions, their missing names and one-sentence errors, on SQLite and MariaDB."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from kmdb import reports
from kmdb.errors import ConfigError, ReportError
from kmdb.load.database import create_schema
from kmdb.settings import Settings
from tests.helpers import imported_world


def test_unknown_names_give_empty_reports_that_name_them(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    imported_world(engine, settings, tmp_path, 9)
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


def test_a_report_becomes_a_dataframe_of_its_csv_rows_or_says_to_install_pandas(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    imported_world(engine, settings, tmp_path, 10)
    report = reports.funnel(engine, ["a", "b"])
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(
            ConfigError, match="^to_dataframe needs pandas; run pip install pandas.$"
        ):
            reports.to_dataframe(report)
        return
    frame = reports.to_dataframe(report)
    header, body = reports.rows(report)
    assert list(frame.columns) == header
    assert frame.values.tolist() == body
