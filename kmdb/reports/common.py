"""What every report shares: the range, periods, money and the database it reads."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from sqlalchemy import Engine

from kmdb.errors import KmdbError, ReportError

DAY = 86_400
EPOCH = dt.date(1970, 1, 1)
PERIODS = ("day", "week", "month")
BUCKETS = {"day": DAY, "week": 7 * DAY}

DateLike = dt.date | str | None


def engine_for(database: Engine | str) -> Engine:
    """An engine for an engine or a database URL, checked to hold imported tables."""
    from sqlalchemy import inspect

    if isinstance(database, str):
        from kmdb.load.engine import make_engine
        from kmdb.settings import Settings

        database = make_engine(Settings(database_url=database))
    tables = set(inspect(database).get_table_names())
    if not {"events", "properties", "keys"} <= tables:
        raise KmdbError("The database holds no imported data yet; run kmdb import first.")
    return database


def parse_day(value: DateLike, option: str) -> dt.date | None:
    """A date from a date or 'YYYY-MM-DD' text; ReportError otherwise."""
    if value is None or isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ReportError(f"{option} {value!r} is not a day like 2013-03-31.") from None


def day_number(day: dt.date) -> int:
    """Days since 1970-01-01."""
    return (day - EPOCH).days


def day_name(number: int) -> str:
    """A day number as YYYY-MM-DD."""
    return (EPOCH + dt.timedelta(days=number)).isoformat()


@dataclass(frozen=True)
class Range:
    """`--from DAY --to DAY`, both inclusive, UTC; None is open."""

    first: dt.date | None = None
    last: dt.date | None = None

    @property
    def start(self) -> int | None:
        """The first second in the range (epoch seconds), or None."""
        return None if self.first is None else day_number(self.first) * DAY

    @property
    def end(self) -> int | None:
        """The first second after the range, or None."""
        return None if self.last is None else (day_number(self.last) + 1) * DAY

    def __contains__(self, t: int) -> bool:
        start, end = self.start, self.end
        return (start is None or t >= start) and (end is None or t < end)


def make_range(from_: DateLike, to: DateLike) -> Range:
    """The range of --from and --to, refusing a --to before --from."""
    first, last = parse_day(from_, "--from"), parse_day(to, "--to")
    if first is not None and last is not None and last < first:
        raise ReportError(f"--to {last} is before --from {first}; give the earlier day first.")
    return Range(first, last)


def check_choice(value: str, choices: Sequence[str], option: str) -> str:
    """value when it is one of choices; ReportError otherwise."""
    if value not in choices:
        raise ReportError(f"{option} {value!r} is not one of {', '.join(choices)}.")
    return value


class Periods:
    """Days, 7-day weeks from an origin day, or calendar months (the first from --from)."""

    def __init__(self, kind: str, origin: int, from_given: bool) -> None:
        self.kind = check_choice(kind, PERIODS, "--period")
        self.origin = origin
        self.from_given = from_given

    def of(self, day: int) -> int:
        """The first day of the period holding day (day numbers)."""
        if self.kind == "day":
            return day
        if self.kind == "week":
            return self.origin + 7 * ((day - self.origin) // 7)
        first = day_number((EPOCH + dt.timedelta(days=day)).replace(day=1))
        return max(first, self.origin) if self.from_given else first

    def after(self, start: int) -> int:
        """The first day of the period after the one starting at start."""
        if self.kind == "day":
            return start + 1
        if self.kind == "week":
            return start + 7
        date = EPOCH + dt.timedelta(days=start)
        following = dt.date(date.year + date.month // 12, date.month % 12 + 1, 1)
        return day_number(following)

    def listed(self, first_day: int, last_day: int) -> list[int]:
        """Every period from the one holding first_day to the one holding last_day."""
        periods, start = [], self.of(first_day)
        while start <= last_day:
            periods.append(start)
            start = self.after(start)
        return periods


def ratio(part: int, whole: int) -> float:
    """part / whole rounded to 6 places; 0 when whole is 0."""
    return round(part / whole, 6) if whole else 0.0


def money(amount: Decimal | Fraction | int) -> str:
    """An exact amount rounded half-up (away from zero) to 2 decimals, as text."""
    cents = Fraction(amount) * 100
    whole = abs(cents.numerator) * 2 + cents.denominator
    rounded = whole // (2 * cents.denominator)  # floor(|x| + 1/2)
    sign = "-" if cents < 0 and rounded else ""
    return f"{sign}{rounded // 100}.{rounded % 100:02d}"


_AMOUNT = re.compile(r" *-?[0-9]+(?:\.[0-9]+)? *")


def amount(value: str) -> Decimal | None:
    """The decimal number a property value holds, or None when it holds something else."""
    if _AMOUNT.fullmatch(value) is None:
        return None
    return Decimal(value.strip(" "))
