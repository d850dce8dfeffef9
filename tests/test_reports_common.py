"""kmdb.reports.common: what the reports share: amounts, money, periods, and reading people's rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from kmdb import reports
from kmdb.load.engine import make_engine
from kmdb.reports import common
from kmdb.reports.common import Periods, amount, day_number, money
from kmdb.settings import Settings
from tests import reports_oracle as oracle
from tests.helpers import imported_world


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
    world = imported_world(engine, settings, tmp_path, 12)
    # MySQL cuts a GROUP_CONCAT at group_concat_max_len; a cut text must not lose rows.
    monkeypatch.setattr(common, "GROUP_CONCAT_MAX", "40")
    got = reports.funnel(engine, ["a", "b", "c"], by="variant")
    assert got == oracle.funnel(world, ["a", "b", "c"], by="variant")
    got = reports.revenue(engine, property="amount", period="week", churn_days=7)
    assert got == oracle.revenue(world, "amount", "week", 7)
    engine.dispose()
