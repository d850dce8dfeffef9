"""Records as the database's rows: ids, time literals, and LOAD DATA lines (pure: no I/O).

A record here is the tuple (kind, t, p, n, p2, properties) of kmdb.transform.parse,
numbered by its line. Rows are built in the import's hot loop, so they are
plain tuples and strings: no objects per row.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

from kmdb.transform.parse import Fields

# Row ids are revision * ID_BASE + the line number (events), or + the offset where
# the line's part starts + the property's position in that part (properties: a
# part of n bytes holds fewer than n properties, so parts never share ids).
ID_BASE = 10**12
# The largest revision whose ids still fit a signed 64-bit BIGINT.
MAX_REVISION = (2**63 - 1) // ID_BASE - 1
# Rejected lines keep this many characters of their text.
REJECTED_TEXT_CHARS = 65_536

# The row tuples of tuple_rows: (id, t, key, user_id, identity_id) and
# (id, t, key, value, user_id, event_id, identity_id).
EventRow = tuple[int, str, int, int, int]
PropertyRow = tuple[int, str, int, str, int, int | None, int]


# Every row needs its time as text; a day's date and each second of a day's
# "HH:MM:SS" are formatted once, not per row (strftime is slow).
_TIME_OF_DAY: list[str] = []


@functools.lru_cache(maxsize=4096)
def _day(days: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=days)).isoformat()


def prepare_times_of_day() -> None:
    """Format the 86,400 times of a day (once per process; a worker does it before its first job)."""
    if not _TIME_OF_DAY:
        # An hour's "MM:SS" once, then joined to each hour: cheaper than formatting
        # every second (a worker's start waits on it).
        minutes = [f"{m:02d}:{s:02d}" for m in range(60) for s in range(60)]
        _TIME_OF_DAY.extend([f"{h:02d}:" + ms for h in range(24) for ms in minutes])


def timestamp(t: int) -> str:
    """A UTC DATETIME literal for seconds since the epoch."""
    days, seconds = divmod(t, 86_400)
    if not _TIME_OF_DAY:
        prepare_times_of_day()
    return f"{_day(days)} {_TIME_OF_DAY[seconds]}"


def tsv_rows(
    records: list[tuple[int, Fields]],
    base: int,
    start: int,
    seq: int,
    key_ids: dict[str, int],
    user_ids: dict[str, tuple[int, int | None]],
) -> tuple[list[str], list[str], int]:
    """Events and properties as LOAD DATA lines (the hot loop of a MySQL import)."""
    events: list[str] = []
    properties: list[str] = []
    for line_no, (_kind, t, p, n, _p2, props) in records:
        ts = timestamp(t)
        identity_id, canonical_id = user_ids[p]
        user_id = canonical_id or identity_id
        if n is not None:  # an event: only events have a name (kmdb.transform.parse)
            event_id = base + line_no
            events.append(f"{event_id}\t{ts}\t{key_ids[n]}\t{user_id}\t{identity_id}\n")
            tail = f"\t{user_id}\t{event_id}\t{identity_id}\n"
        else:
            tail = f"\t{user_id}\t\\N\t{identity_id}\n"
        for name, value in props:
            seq += 1
            # Most values need no escaping; isprintable is false for tab, newline and NUL.
            if "\\" in value or not value.isprintable():
                value = escape(value)
            properties.append(f"{base + start + seq}\t{ts}\t{key_ids[name]}\t{value}{tail}")
    return events, properties, seq


def tuple_rows(
    records: list[tuple[int, Fields]],
    base: int,
    start: int,
    seq: int,
    key_ids: dict[str, int],
    user_ids: dict[str, tuple[int, int | None]],
) -> tuple[list[EventRow], list[PropertyRow], int]:
    """Events and properties as row tuples (for executemany on SQLite)."""
    events: list[EventRow] = []
    properties: list[PropertyRow] = []
    for line_no, (_kind, t, p, n, _p2, props) in records:
        ts = timestamp(t)
        identity_id, canonical_id = user_ids[p]
        user_id = canonical_id or identity_id
        event_id: int | None = None
        if n is not None:  # an event: only events have a name (kmdb.transform.parse)
            event_id = base + line_no
            events.append((event_id, ts, key_ids[n], user_id, identity_id))
        for name, value in props:
            seq += 1
            properties.append(
                (base + start + seq, ts, key_ids[name], value, user_id, event_id, identity_id)
            )
    return events, properties, seq


def key_names(records: list[tuple[int, Fields]], known: dict[str, int]) -> set[str]:
    """The event and property names of records that are not in known."""
    names: set[str] = set()
    for _, (_kind, _t, _p, n, _p2, props) in records:
        if n is not None and n not in known:
            names.add(n)
        names.update(name for name, _ in props if name not in known)
    return names


# --- LOAD DATA's text format ---------------------------------------------------

_ESCAPE = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\0": "\\0"})


def escape(value: str) -> str:
    """A string as a LOAD DATA field: \\, tab, newline and NUL escaped."""
    return value.translate(_ESCAPE)


def _field(value: object) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, str):
        # Most names need no escaping; isprintable is false for tab, newline and NUL.
        if "\\" in value or not value.isprintable():
            return value.translate(_ESCAPE)
        return value
    return str(value)


def _tsv_line(row: tuple[Any, ...]) -> str:
    return "\t".join(map(_field, row)) + "\n"


def _event_line(row: tuple[Any, ...]) -> str:
    # (id, t, n, user_id, identity_id): numbers and a time literal, nothing to escape.
    return "{}\t{}\t{}\t{}\t{}\n".format(*row)


def _property_line(row: tuple[Any, ...]) -> str:
    id_, t, key, value, user_id, event_id, identity_id = row
    event = "\\N" if event_id is None else event_id
    return f"{id_}\t{t}\t{key}\t{value.translate(_ESCAPE)}\t{user_id}\t{event}\t{identity_id}\n"


# Formatting rows is the hot path of a MySQL import; the two big tables get their own.
_LINE_FORMATS = {"events": _event_line, "properties": _property_line}


def field(value: object) -> str:
    """One value as a LOAD DATA field: NULL as \\N, and \\, tab, newline and NUL escaped."""
    return _field(value)


def tsv_lines(table: str, rows: list[tuple[Any, ...]]) -> str:
    """Rows of a table as the text of a LOAD DATA file."""
    return "".join(map(_LINE_FORMATS.get(table, _tsv_line), rows))
