"""kmdb.reports.common: what the reports share: amounts, money, periods, and reading people's rows."""

from __future__ import annotations

from kmdb.reports.common import Periods, amount, day_number, money


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
