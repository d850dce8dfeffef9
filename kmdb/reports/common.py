"""What every report shares: the range, periods, names, money and streaming rows by person."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from sqlalchemy import Engine, select, text

from kmdb.errors import KmdbError, ReportError
from kmdb.load import schema

DAY = 86_400
EPOCH = dt.date(1970, 1, 1)
PERIODS = ("day", "week", "month")
BUCKETS = {"day": DAY, "week": 7 * DAY}
# Rows travel from the server in batches of this many: big enough to keep round trips
# few, small enough that a batch is a few megabytes at most.
BATCH = 20_000

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


# --- The database ---------------------------------------------------------------


def _epoch(engine: Engine, column: str) -> str:
    # Whole seconds computed by the server: cheaper than building a datetime per row
    # in Python, and independent of the session's time zone.
    if engine.dialect.name == "sqlite":
        return f"CAST(strftime('%s', {column}) AS INTEGER)"
    return f"TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', {column})"


def _literal(seconds: int) -> str:
    return (dt.datetime(1970, 1, 1) + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S")


def _bounds(column: str, start: int | None, end: int | None, params: dict[str, Any]) -> str:
    where = ""
    if start is not None:
        where += f" AND {column} >= :start"
        params["start"] = _literal(start)
    if end is not None:
        where += f" AND {column} < :end"
        params["end"] = _literal(end)
    return where


def key_ids(engine: Engine, names: Iterable[str]) -> dict[str, int]:
    """The keys.id of each name that the database knows."""
    wanted = sorted(set(names))
    k = schema.keys
    with engine.connect() as conn:
        rows = conn.execute(select(k.c.string, k.c.id).where(k.c.string.in_(wanted))).all()
    return {name: int(id_) for name, id_ in rows}


def find_events(engine: Engine, names: Iterable[str]) -> tuple[dict[str, int], list[str]]:
    """The ids of event names that have events, and the names that have none."""
    names = list(dict.fromkeys(names))
    ids = key_ids(engine, names)
    found: dict[str, int] = {}
    with engine.connect() as conn:
        for name in names:
            id_ = ids.get(name)
            if (
                id_ is not None
                and conn.execute(
                    text("SELECT 1 FROM events WHERE n = :n LIMIT 1"), {"n": id_}
                ).first()
            ):
                found[name] = id_
    return found, [name for name in names if name not in found]


def find_property(engine: Engine, key: str) -> int | None:
    """The id of a property key that has values, else None."""
    id_ = key_ids(engine, [key]).get(key)
    if id_ is None:
        return None
    sql = f"SELECT 1 FROM properties WHERE {_key_column(engine)} = :k LIMIT 1"
    with engine.connect() as conn:
        row = conn.execute(text(sql), {"k": id_}).first()
    return id_ if row else None


def _key_column(engine: Engine) -> str:
    return '"key"' if engine.dialect.name == "sqlite" else "`key`"


# The longest text a person's rows may make on MySQL: as long as a row may be sent.
GROUP_CONCAT_MAX = "@@max_allowed_packet"


def _stream(engine: Engine, sql: str, params: dict[str, Any]) -> Iterator[Any]:
    with engine.connect() as conn:
        if engine.dialect.name != "sqlite":
            # A person's rows come as one GROUP_CONCAT text, which must not be cut at
            # the default 1,024 bytes; one cut anyway shows in the count and is re-read.
            conn.execute(text(f"SET SESSION group_concat_max_len = {GROUP_CONCAT_MAX}"))
            # With value (a VARCHAR(255) of utf8mb4) in a row, MariaDB's default limit of
            # 1,024 bytes makes a sort keep row ids and read every row again at random.
            conn.execute(text("SET SESSION max_length_for_sort_data = 16384"))
        result = conn.execution_options(stream_results=True, yield_per=BATCH).execute(
            text(sql), params
        )
        yield from result


# One text per person carries all their rows, so that the server sends a row per
# person rather than per event: the client's cost per row, not the server's, is
# what a report over millions of rows spends its time on (PyMySQL decodes each row
# in Python). Values may hold any character, so each person's count of rows is
# checked, and a person whose text does not split into that many is read row by row.
ROWS, FIELDS = "\x1f", "\x1e"


def _grouped(engine: Engine, expression: str, separator: str) -> str:
    if engine.dialect.name == "sqlite":
        return f"group_concat({expression}, '{separator}')"
    return f"GROUP_CONCAT({expression} SEPARATOR '{separator}')"


def _join(engine: Engine, *parts: str) -> str:
    return " || ".join(parts) if engine.dialect.name == "sqlite" else f"CONCAT({', '.join(parts)})"


# A secondary-index lookup costs a random read of the table; reading the whole table
# costs a sequential pass. Below one row of the table in this many, the index pays.
LOOKUP_COST = 200


def _access(engine: Engine, table: str, where: str, params: dict[str, Any]) -> str:
    """An index hint for MySQL: the whole table in one pass, or the name index when it is selective.

    Without one, MySQL walks the (user_id, t) index to save the GROUP BY's sort,
    and reads the table at random for every entry.
    """
    if engine.dialect.name == "sqlite":
        return ""
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT COUNT(*) FROM {table} WHERE {where}"), params).scalar()
        total = conn.execute(
            text(
                "SELECT table_rows FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = :t"
            ),
            {"t": table},
        ).scalar()
    by_user = "events_user_t" if table == "events" else "properties_user_key_t"
    by_name = "events_n_t" if table == "events" else "properties_key_t"
    if (rows or 0) * LOOKUP_COST > (total or 0):
        return f" IGNORE INDEX ({by_user}, {by_name})"
    return f" IGNORE INDEX ({by_user})"


def person_events(
    engine: Engine, ids: Iterable[int], start: int | None, end: int | None
) -> Iterator[tuple[int, list[tuple[int, int]]]]:
    """(user_id, [(t, n), ...] by time) of each person with events of these names in [start, end)."""
    params: dict[str, Any] = {}
    where = f"n IN ({', '.join(str(int(i)) for i in sorted(set(ids)))})"
    where += _bounds("t", start, end, params)
    pairs = _grouped(engine, _join(engine, _epoch(engine, "t"), "','", "n"), ",")
    hint = _access(engine, "events", where, params)
    sql = (
        f"SELECT user_id, COUNT(*), {pairs} FROM events{hint} WHERE {where} "
        "GROUP BY user_id ORDER BY user_id"
    )
    limit = _text_limit(engine)
    for user_id, count, joined_text in _stream(engine, sql, params):
        numbers = [] if _cut(joined_text, limit) else list(map(int, joined_text.split(",")))
        if len(numbers) != 2 * count:
            numbers = _one_person(engine, "SELECT {t}, n FROM events", where, params, user_id)
        yield user_id, sorted(zip(numbers[::2], numbers[1::2], strict=True))


def person_values(
    engine: Engine, key: int, start: int | None, end: int | None
) -> Iterator[tuple[int, list[tuple[int, str]]]]:
    """(user_id, [(t, value), ...] by time, then value) of each person with values of key."""
    params: dict[str, Any] = {"k": int(key)}
    where = f"{_key_column(engine)} = :k{_bounds('t', start, end, params)}"
    pairs = _grouped(engine, _join(engine, _epoch(engine, "t"), f"'{FIELDS}'", "value"), ROWS)
    hint = _access(engine, "properties", where, params)
    sql = (
        f"SELECT user_id, COUNT(*), {pairs} FROM properties{hint} WHERE {where} "
        "GROUP BY user_id ORDER BY user_id"
    )
    limit = _text_limit(engine)
    for user_id, count, joined_text in _stream(engine, sql, params):
        parts = [] if _cut(joined_text, limit) else joined_text.split(ROWS)
        if len(parts) == count:
            rows = [(int(t), v) for t, v in (p.split(FIELDS, 1) for p in parts)]
        else:
            flat = _one_person(engine, "SELECT {t}, value FROM properties", where, params, user_id)
            rows = [(int(t), v) for t, v in zip(flat[::2], flat[1::2], strict=True)]
        rows.sort()
        yield user_id, rows


def _text_limit(engine: Engine) -> int | None:
    """The bytes MySQL cuts a GROUP_CONCAT at; None on SQLite, which never cuts."""
    if engine.dialect.name == "sqlite":
        return None
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT {GROUP_CONCAT_MAX}")).scalar_one())


def _cut(joined_text: str, limit: int | None) -> bool:
    # A cut text is as long as the limit (less a partial character at most); one that
    # merely comes close is read again too, which costs time, not correctness.
    return (
        limit is not None
        and len(joined_text) * 4 >= limit - 4
        and len(joined_text.encode()) >= limit - 4
    )


def _one_person(
    engine: Engine, select_sql: str, where: str, params: dict[str, Any], user_id: int
) -> list[Any]:
    sql = select_sql.format(t=_epoch(engine, "t")) + f" WHERE user_id = :u AND {where}"
    with engine.connect() as conn:
        rows = conn.execute(text(sql), {**params, "u": user_id}).all()
    return [int(x) if i == 0 else x for row in rows for i, x in enumerate(row)]


def first_values(
    engine: Engine, key: int, start: int | None, end: int | None, limit: int = 1000
) -> Iterator[tuple[int, str]]:
    """(t, value) of one key in time order, read a page at a time so a caller may stop early."""
    params: dict[str, Any] = {"k": int(key)}
    where = f"{_key_column(engine)} = :k{_bounds('t', start, end, params)}"
    offset = 0
    while True:
        sql = (
            f"SELECT {_epoch(engine, 't')} AS s, value FROM properties WHERE {where} "
            f"ORDER BY t, value LIMIT {limit} OFFSET {offset}"
        )
        with engine.connect() as conn:
            rows = conn.execute(text(sql), params).all()
        yield from ((int(t), value) for t, value in rows)
        if len(rows) < limit:
            return
        offset += limit


def joined(
    left: Iterable[tuple[int, list[Any]]], right: Iterable[tuple[int, list[Any]]]
) -> Iterator[tuple[int, list[Any], list[Any]]]:
    """Each person of left with their rows of right ([] when none); both sorted by person."""
    other = iter(right)
    pending = next(other, None)
    for user_id, rows in left:
        while pending is not None and pending[0] < user_id:
            pending = next(other, None)
        if pending is not None and pending[0] == user_id:
            yield user_id, rows, pending[1]
        else:
            yield user_id, rows, []
    # Read the rest so that the connection under it ends its result cleanly; the
    # rows left are those of people after the last one of left, usually few.
    for _ in other:
        pass
