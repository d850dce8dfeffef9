"""A report's rows from the database, one row per person, read through covering indexes.

The server sends a row per person, with all of that person's events of the named
kinds (or all their values of one key) as one text: the client's cost per row, not
the server's, is what a report over millions of rows would otherwise spend its time
on (PyMySQL decodes each row in Python). Each query reads one index that holds
every column it needs (kmdb/schema.py), never the tables themselves.
"""

from __future__ import annotations

import datetime as dt
import math
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, inspect, select, text

from kmdb.load import schema

# Rows travel from the server in batches of this many: big enough to keep round trips
# few, small enough that a batch is a few megabytes at most.
BATCH = 20_000
# The longest text a person's rows may make on MySQL: as long as a row may be sent.
GROUP_CONCAT_MAX = "@@max_allowed_packet"
# Separators of a person's property rows, and of the two fields of each.
ROWS, FIELDS = "\x1f", "\x1e"
# When the named events are at least this share of all events, reading every event in
# person order (events_user_t_n) costs less than reading theirs by name
# (events_n_t_user) and sorting them by person; below it, the names' index wins.
BY_PERSON_SHARE = 0.25
BY_PERSON, BY_NAME = "events_user_t_n", "events_n_t_user"
BY_KEY = "properties_key_t_user_value"
# Seconds from 0000-01-01 (MySQL's TO_SECONDS) to 1970-01-01.
TO_SECONDS_1970 = 62_167_219_200
# More seconds than from year 0 to the end of 9999: the step between event names' codes.
SPAN = 10**12
# The largest event name id whose codes fit a signed 64-bit integer.
LARGEST_ID = (2**63 - 1) // SPAN - 1


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


def _epoch(engine: Engine, column: str) -> str:
    # Whole seconds since 1970 computed by the server, independent of the session's
    # time zone, with the cheapest function each offers: a report evaluates it for
    # every row it reads.
    if engine.dialect.name != "sqlite":
        return f"(TO_SECONDS({column}) - {TO_SECONDS_1970})"
    if engine.dialect.dbapi.sqlite_version_info >= (3, 38):  # type: ignore[union-attr]
        return f"unixepoch({column})"
    return f"CAST(strftime('%s', {column}) AS INTEGER)"


def _from_year_0(engine: Engine, column: str) -> str:
    # Seconds since 0000-01-01: never negative, whatever the time.
    if engine.dialect.name != "sqlite":
        return f"TO_SECONDS({column})"
    return f"({_epoch(engine, column)} + {TO_SECONDS_1970})"


def _literal(seconds: int) -> str:
    return (dt.datetime(1970, 1, 1) + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S")


def _bounds(start: int | None, end: int | None, params: dict[str, Any]) -> str:
    where = ""
    if start is not None:
        where += " AND t >= :start"
        params["start"] = _literal(start)
    if end is not None:
        where += " AND t < :end"
        params["end"] = _literal(end)
    return where


def _grouped(engine: Engine, expression: str, separator: str) -> str:
    if engine.dialect.name == "sqlite":
        return f"group_concat({expression}, '{separator}')"
    return f"GROUP_CONCAT({expression} SEPARATOR '{separator}')"


def _join(engine: Engine, *parts: str) -> str:
    return " || ".join(parts) if engine.dialect.name == "sqlite" else f"CONCAT({', '.join(parts)})"


def _use(engine: Engine, index: str) -> str:
    return f" INDEXED BY {index}" if engine.dialect.name == "sqlite" else f" FORCE INDEX ({index})"


def _without(engine: Engine, table: str, *names: str) -> str | None:
    """None when the table has these indexes, else the hint to use without them.

    A database whose indexes are put off (a first import under way) or that an older
    kmdb made may lack them; a hint naming one would then be an error. Left to
    itself, MySQL may then walk an index by person to save its sort, reading the
    table at random for every entry: far slower than one pass over the table.
    """
    indexes = inspect(engine).get_indexes(table)
    if set(names) <= {ix["name"] for ix in indexes}:
        return None
    by_person = [
        ix["name"]
        for ix in indexes
        if ix["column_names"][0] == "user_id" and ix["name"] is not None  # reflected: named
    ]
    if engine.dialect.name == "sqlite" or not by_person:
        return ""
    return f" IGNORE INDEX ({', '.join(by_person)})"


def _event_index(engine: Engine, where: str, params: dict[str, Any]) -> str:
    """The hint that reads the named events through the index that costs least."""
    hint = _without(engine, "events", BY_PERSON, BY_NAME)
    if hint is not None:
        return hint
    named = f"SELECT 1 FROM events{_use(engine, BY_NAME)} WHERE {where}"
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # Row ids only grow, so the largest is about the number of rows, read at once;
            # counting the names' index entries stops at the share.
            total = conn.execute(text("SELECT MAX(rowid) FROM events")).scalar()
            enough = max(1, math.ceil(int(total or 0) * BY_PERSON_SHARE))
            sql = f"SELECT COUNT(*) FROM ({named} LIMIT {enough}) AS named"
            rows = conn.execute(text(sql), params).scalar_one()
        else:
            # The optimizer's estimates, from a few dives into the index: counting
            # would cost a tenth of the report.
            total = conn.execute(
                text(
                    "SELECT table_rows FROM information_schema.tables "
                    "WHERE table_schema = DATABASE() AND table_name = 'events'"
                )
            ).scalar()
            enough = max(1, math.ceil(int(total or 0) * BY_PERSON_SHARE))
            rows = conn.execute(text(f"EXPLAIN {named}"), params).mappings().one()["rows"]
    return _use(engine, BY_PERSON if int(rows or 0) >= enough else BY_NAME)


def _stream(engine: Engine, sql: str, params: dict[str, Any]) -> Iterator[Any]:
    """The rows of sql, streamed; the first item is the length at which a text is cut (or None)."""
    with engine.connect() as conn:
        limit = _text_limit(conn)
        if engine.dialect.name != "sqlite":
            # With value (a VARCHAR(255) of utf8mb4) in a row, MariaDB's default limit of
            # 1,024 bytes makes a sort keep row ids and read every row again at random.
            conn.execute(text("SET SESSION max_length_for_sort_data = 16384"))
        yield limit
        result = conn.execution_options(stream_results=True, yield_per=BATCH).execute(
            text(sql), params
        )
        yield from result


def _text_limit(conn: Connection) -> int | None:
    """The bytes MySQL cuts a row's text at; None on SQLite, which never cuts."""
    if conn.dialect.name == "sqlite":
        return None
    # A person's rows come as one text, which must not be cut at the default 1,024
    # bytes; one cut anyway is read again row by row.
    conn.execute(text(f"SET SESSION group_concat_max_len = {GROUP_CONCAT_MAX}"))
    return int(conn.execute(text("SELECT @@group_concat_max_len")).scalar_one())


def _cut(joined_text: str, limit: int | None) -> bool:
    # A cut text is as long as the limit (less a partial character at most); one that
    # merely comes close is read again too, which costs time, not correctness.
    return (
        limit is not None
        and len(joined_text) * 4 >= limit - 4
        and len(joined_text.encode()) >= limit - 4
    )


class Times:
    """A person's times of each event name, from the numbers the server sent for them.

    Each number is the name's id (or its place in the report's list, see
    person_events) times SPAN plus seconds since year 0, so that once sorted, each
    name's times are one slice of codes, in time order: a report finds the times it
    needs by bisection, without a list per name.
    """

    __slots__ = ("_places", "codes")

    def __init__(self, codes: list[int], places: dict[int, int] | None = None) -> None:
        self.codes = sorted(codes)
        self._places = places

    def span(self, n: int) -> tuple[int, int, int]:
        """(start, end, base) of event name n: its times are codes[start:end] less base."""
        factor = n if self._places is None else self._places[n]
        codes, base = self.codes, factor * SPAN + TO_SECONDS_1970
        start = bisect_left(codes, base)
        return start, bisect_left(codes, base + SPAN, start), base


def person_events(
    engine: Engine, ids: Iterable[int], start: int | None, end: int | None
) -> Iterator[tuple[int, Times]]:
    """(user_id, their times of each of ids) of each person with events of ids in [start, end)."""
    ids = list(dict.fromkeys(int(i) for i in ids))
    params: dict[str, Any] = {}
    listed = ", ".join(map(str, ids))
    where = f"n IN ({listed}){_bounds(start, end, params)}"
    places = None
    factor = "n"
    if max(ids) > LARGEST_ID:
        # A code must stay within a signed 64-bit integer: number the names 1, 2, ...
        places = {i: k + 1 for k, i in enumerate(ids)}
        factor = f"CASE n {' '.join(f'WHEN {i} THEN {k}' for i, k in places.items())} END"
    code = f"{factor} * {SPAN} + {_from_year_0(engine, 't')}"
    hint = _event_index(engine, where, params)
    sql = (
        f"SELECT user_id, {_grouped(engine, code, ',')} FROM events{hint} WHERE {where} "
        "GROUP BY user_id ORDER BY user_id"
    )
    rows = _stream(engine, sql, params)
    limit = next(rows)
    for user_id, joined_text in rows:
        if _cut(joined_text, limit):
            codes = _one_person(engine, f"SELECT {code} FROM events", where, params, user_id)
        else:
            # orjson reads a list of numbers twice as fast as int() one at a time.
            codes = orjson.loads(f"[{joined_text}]")
        yield user_id, Times(codes, places)


def person_values(
    engine: Engine, key: int, start: int | None, end: int | None
) -> Iterator[tuple[int, list[tuple[int, str]]]]:
    """(user_id, [(t, value), ...] by time, then value) of each person with values of key."""
    params: dict[str, Any] = {"k": int(key)}
    where = f"{_key_column(engine)} = :k{_bounds(start, end, params)}"
    pairs = _grouped(engine, _join(engine, _epoch(engine, "t"), f"'{FIELDS}'", "value"), ROWS)
    hint = _without(engine, "properties", BY_KEY)
    if hint is None:
        hint = _use(engine, BY_KEY)
    sql = (
        f"SELECT user_id, COUNT(*), {pairs} FROM properties{hint} WHERE {where} "
        "GROUP BY user_id ORDER BY user_id"
    )
    rows = _stream(engine, sql, params)
    limit = next(rows)
    for user_id, count, joined_text in rows:
        # Values may hold the separators: a person whose text does not split into as
        # many rows as they have is read row by row.
        parts = [] if _cut(joined_text, limit) else joined_text.split(ROWS)
        if len(parts) == count:
            found = [(int(t), v) for t, v in (p.split(FIELDS, 1) for p in parts)]
        else:
            sql = f"SELECT {_epoch(engine, 't')}, value FROM properties"
            flat = _one_person(engine, sql, where, params, user_id)
            found = list(zip(flat[::2], flat[1::2], strict=True))
        found.sort()
        yield user_id, found


def _one_person(
    engine: Engine, select_sql: str, where: str, params: dict[str, Any], user_id: int
) -> list[Any]:
    sql = f"{select_sql} WHERE user_id = :u AND {where}"
    with engine.connect() as conn:
        rows = conn.execute(text(sql), {**params, "u": user_id}).all()
    return [int(x) if i == 0 else x for row in rows for i, x in enumerate(row)]


def first_values(
    engine: Engine, key: int, start: int | None, end: int | None, limit: int = 1000
) -> Iterator[tuple[int, str]]:
    """(t, value) of one key in time order, read a page at a time so a caller may stop early."""
    params: dict[str, Any] = {"k": int(key)}
    where = f"{_key_column(engine)} = :k{_bounds(start, end, params)}"
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
    left: Iterable[tuple[int, Any]], right: Iterable[tuple[int, Any]], empty: Any = ()
) -> Iterator[tuple[int, Any, Any]]:
    """Each person of left with their rows of right (empty when none); both sorted by person."""
    other = iter(right)
    pending = next(other, None)
    for user_id, rows in left:
        while pending is not None and pending[0] < user_id:
            pending = next(other, None)
        if pending is not None and pending[0] == user_id:
            yield user_id, rows, pending[1]
        else:
            yield user_id, rows, empty
    # Read the rest so that the connection under it ends its result cleanly; the
    # rows left are those of people after the last one of left, usually few.
    for _ in other:
        pass
