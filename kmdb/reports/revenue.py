"""KM's Revenue report: money in, refunds, paying, new and churned people per period."""

from __future__ import annotations

from bisect import bisect_right
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

from sqlalchemy import Engine

from kmdb.errors import ReportError
from kmdb.reports.common import (
    DAY,
    DateLike,
    Periods,
    amount,
    day_name,
    day_number,
    engine_for,
    make_range,
    money,
)
from kmdb.reports.stream import find_property, first_values, person_values


class _Period:
    __slots__ = ("churned", "new_paying", "paying", "refunds", "revenue")

    def __init__(self) -> None:
        self.revenue = Decimal(0)
        self.refunds = Decimal(0)
        self.paying = 0
        self.new_paying = 0
        self.churned = 0


def revenue(
    database: Engine | str,
    *,
    property: str = "billing amount",  # noqa: A002 - the contract's own word
    period: str = "month",
    churn_days: int = 30,
    from_: DateLike = None,
    to: DateLike = None,
) -> dict[str, Any]:
    """Revenue per period of the range, as the contract's JSON object."""
    if not isinstance(churn_days, int) or churn_days < 1:
        raise ReportError(f"--churn-days {churn_days!r} must be a whole number of at least 1.")
    Periods(period, 0, False)  # checks the period's name before any work
    within = make_range(from_, to)
    engine = engine_for(database)
    key = find_property(engine, property)
    missing = [] if key is not None else [property]
    start, end = within.start, within.end
    # Weeks start at --from, else at the earliest amount's day, which must be known first.
    origin = day_number(within.first) if within.first is not None else None
    if origin is None and key is not None:
        origin = next(
            (
                t // DAY
                for t, value in first_values(engine, key, None, end)
                if amount(value) is not None
            ),
            None,
        )
    periods = Periods(period, origin or 0, within.first is not None)
    table: dict[int, _Period] = {}
    last_amount: int | None = None
    total = Decimal(0)
    paying = not_numbers = 0
    churn = churn_days * DAY
    with localcontext() as ctx:
        ctx.prec = 1000  # values are at most 255 characters: sums stay exact
        if key is not None:
            for _, rows in person_values(engine, key, None, end):
                positives: list[int] = []
                paid_in: set[int] = set()
                for t, value in rows:
                    number = amount(value)
                    if number is not None and number > 0:
                        positives.append(t)
                    if start is not None and t < start:
                        continue
                    if number is None:
                        not_numbers += 1
                        continue
                    last_amount = t if last_amount is None else max(last_amount, t)
                    row = table.setdefault(periods.of(t // DAY), _Period())
                    row.revenue += number
                    total += number
                    if number < 0:
                        row.refunds += number
                    elif number > 0:
                        paid_in.add(periods.of(t // DAY))
                for p in paid_in:
                    table[p].paying += 1
                paying += bool(paid_in)
                if positives and (start is None or positives[0] >= start):
                    table[periods.of(positives[0] // DAY)].new_paying += 1
                churned_in: set[int] = set()
                for i, tp in enumerate(positives):
                    c = tp + churn
                    following = bisect_right(positives, tp, i)
                    if following < len(positives) and positives[following] <= c:
                        continue
                    if (start is None or c >= start) and (end is None or c < end):
                        churned_in.add(periods.of(c // DAY))
                for p in churned_in:
                    table.setdefault(p, _Period()).churned += 1
        first_day = origin if within.first is not None or last_amount is not None else None
        if within.last is not None:
            last_day: int | None = day_number(within.last)
        else:
            last_day = None if last_amount is None else last_amount // DAY
        listed = (
            periods.listed(first_day, last_day)
            if first_day is not None and last_day is not None
            else []
        )
        report: dict[str, Any] = {
            "report": "revenue",
            "property": property,
            "period": period,
            "periods": [
                _period(start_day, table.get(start_day, _Period())) for start_day in listed
            ],
            "total": {
                "revenue": money(total),
                "paying": paying,
                "revenue_per_paying": money(Fraction(total) / paying if paying else 0),
                "not_numbers": not_numbers,
            },
        }
    if missing:
        report["missing"] = missing
    return report


def _period(start: int, row: _Period) -> dict[str, Any]:
    return {
        "period": day_name(start),
        "revenue": money(row.revenue),
        "refunds": money(row.refunds),
        "paying": row.paying,
        "new_paying": row.new_paying,
        "churned": row.churned,
    }
