"""A report's rows from the database, one row per person, read through covering indexes.

The server sends a row per person, with all of that person's times of each event
name (or all their values of one key) as one text: the client's cost per row, not
the server's, is what a report over millions of rows would otherwise spend its time
on (PyMySQL decodes each row in Python). Each query reads one index that holds
every column it needs (kmdb/schema.py), never the tables themselves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, inspect, select, text

from kmdb import schema

# Rows travel from the server in batches of this many: big enough to keep round trips
# few, small enough that a batch is a few megabytes at most.
BATCH = 20_000
# The longest text a person's rows may make on MySQL: as long as a row may be sent
# (shared by the texts of one row).
GROUP_CONCAT_MAX = "@@max_allowed_packet"
# Separators of a person's property rows, and of the two fields of each.
ROWS, FIELDS = "\x1f", "\x1e"
# When the named events are at least this share of all events, reading every event in
# person order (events_user_t_n) costs less than reading theirs by name
# (events_n_t_user) and sorting them by person; below it, the names' index wins.
BY_PERSON_SHARE = 4  # one in four
BY_PERSON, BY_NAME = "events_user_t_n", "events_n_t_user"
BY_KEY = "properties_key_t_user_value"
# Seconds from 0000-01-01 (MySQL's TO_SECONDS) to 1970-01-01.
TO_SECONDS_1970 = 62_167_219_200


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


def _seconds(engine: Engine, column: str) -> str:
    # Whole seconds since 1970 computed by the server, independent of the session's
    # time zone, with the cheapest function each offers: a report evaluates it for
    # every row it reads.
    if engine.dialect.name != "sqlite":
        return f"(TO_SECONDS({column}) - {TO_SECONDS_1970})"
    if engine.dialect.dbapi.sqlite_version_info >= (3, 38):  # type: ignore[union-attr]
        return f"unixepoch({column})"
    return f"CAST(strftime('%s', {column}) AS INTEGER)"


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


def _has_index(engine: Engine, table: str, name: str) -> bool:
    # A database whose indexes are put off (a first import under way) or that an
    # older kmdb made may lack it; a hint naming it would then be an error.
    return any(ix["name"] == name for ix in inspect(engine).get_indexes(table))


def _use(engine: Engine, index: str) -> str:
    return f" INDEXED BY {index}" if engine.dialect.name == "sqlite" else f" FORCE INDEX ({index})"


def _event_index(engine: Engine, where: str, params: dict[str, Any]) -> str:
    """The hint that reads the named events through the index that costs least."""
    if not (_has_index(engine, "events", BY_PERSON) and _has_index(engine, "events", BY_NAME)):
        return ""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # Row ids only grow, so the largest is about the number of rows, read at once.
            total = conn.execute(text("SELECT MAX(rowid) FROM events")).scalar()
        else:
            total = conn.execute(
                text(
                    "SELECT table_rows FROM information_schema.tables "
                    "WHERE table_schema = DATABASE() AND table_name = 'events'"
                )
            ).scalar()
        enough = max(1, int(total or 0) // BY_PERSON_SHARE)
        # Counting stops at `enough`: the names' index entries, counted without the table.
        counted = conn.execute(
            text(
                f"SELECT COUNT(*) FROM (SELECT 1 FROM events{_use(engine, BY_NAME)} "
                f"WHERE {where} LIMIT {enough}) AS named"
            ),
            params,
        ).scalar_one()
    return _use(engine, BY_PERSON if counted >= enough else BY_NAME)


def _stream(engine: Engine, sql: str, params: dict[str, Any], texts: int) -> Iterator[Any]:
    """The rows of sql, streamed; the first item is the length at which a text is cut (or None)."""
    with engine.connect() as conn:
        limit = _text_limit(conn, texts)
        if engine.dialect.name != "sqlite":
            # With value (a VARCHAR(255) of utf8mb4) in a row, MariaDB's default limit of
            # 1,024 bytes makes a sort keep row ids and read every row again at random.
            conn.execute(text("SET SESSION max_length_for_sort_data = 16384"))
        yield limit
        result = conn.execution_options(stream_results=True, yield_per=BATCH).execute(
            text(sql), params
        )
        yield from result


def _text_limit(conn: Connection, texts: int) -> int | None:
    """The bytes MySQL cuts each of a row's texts at; None on SQLite, which never cuts."""
    if conn.dialect.name == "sqlite":
        return None
    # A person's rows come as texts, which must not be cut at the default 1,024 bytes
    # and together must fit in a row; one cut anyway is read again row by row.
    conn.execute(text(f"SET SESSION group_concat_max_len = ({GROUP_CONCAT_MAX}) DIV {texts}"))
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
    """A person's times of each event name, as sorted lists of seconds, parsed when asked for."""

    __slots__ = ("_lists", "_texts")

    def __init__(self, texts: Sequence[str | None]) -> None:
        self._texts = texts
        self._lists: dict[int, list[int]] = {}

    def __getitem__(self, i: int) -> list[int]:
        """The times of the i-th name, earliest first."""
        found = self._lists.get(i)
        if found is None:
            joined_text = self._texts[i]
            found = sorted(map(int, joined_text.split(","))) if joined_text else []
            self._lists[i] = found
        return found


def person_events(
    engine: Engine, ids: Sequence[int], start: int | None, end: int | None
) -> Iterator[tuple[int, Times]]:
    """(user_id, their times of each of ids) of each person with events of ids in [start, end)."""
    ids = list(dict.fromkeys(int(i) for i in ids))
    params: dict[str, Any] = {}
    where = f"n IN ({', '.join(map(str, ids))}){_bounds(start, end, params)}"
    seconds = _seconds(engine, "t")
    if len(ids) == 1:
        columns = [_grouped(engine, seconds, ",")]
    else:
        columns = [_grouped(engine, f"CASE WHEN n = {i} THEN {seconds} END", ",") for i in ids]
    hint = _event_index(engine, where, params)
    sql = (
        f"SELECT user_id, {', '.join(columns)} FROM events{hint} WHERE {where} "
        "GROUP BY user_id ORDER BY user_id"
    )
    rows = _stream(engine, sql, params, len(columns))
    limit = next(rows)
    for user_id, *texts in rows:
        if limit is not None and any(t is not None and _cut(t, limit) for t in texts):
            flat = _one_person(engine, f"SELECT {seconds}, n FROM events", where, params, user_id)
            texts = [
                ",".join(str(t) for t, n in zip(flat[::2], flat[1::2], strict=True) if n == i)
                for i in ids
            ]
        yield user_id, Times(texts)


def person_values(
    engine: Engine, key: int, start: int | None, end: int | None
) -> Iterator[tuple[int, list[tuple[int, str]]]]:
    """(user_id, [(t, value), ...] by time, then value) of each person with values of key."""
    params: dict[str, Any] = {"k": int(key)}
    where = f"{_key_column(engine)} = :k{_bounds(start, end, params)}"
    pairs = _grouped(engine, _join(engine, _seconds(engine, "t"), f"'{FIELDS}'", "value"), ROWS)
    hint = _use(engine, BY_KEY) if _has_index(engine, "properties", BY_KEY) else ""
    sql = (
        f"SELECT user_id, COUNT(*), {pairs} FROM properties{hint} WHERE {where} "
        "GROUP BY user_id ORDER BY user_id"
    )
    rows = _stream(engine, sql, params, 1)
    limit = next(rows)
    for user_id, count, joined_text in rows:
        # Values may hold the separators: a person whose text does not split into as
        # many rows as they have is read row by row.
        parts = [] if _cut(joined_text, limit) else joined_text.split(ROWS)
        if len(parts) == count:
            found = [(int(t), v) for t, v in (p.split(FIELDS, 1) for p in parts)]
        else:
            sql = f"SELECT {_seconds(engine, 't')}, value FROM properties"
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
            f"SELECT {_seconds(engine, 't')} AS s, value FROM properties WHERE {where} "
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
