"""Planning and applying time partitions of events, properties and aliases on MySQL.

Boundaries fall at MIN + k*DAYS for k = 1, 2, ... up to and including the first
boundary after MAX; one catch-all partition takes later rows, and the first range
takes everything before its boundary, however old.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text

from kmdb.errors import PartitionDatesError, PartitionError
from kmdb.load import schema
from kmdb.load.engine import is_mysql

# Both MariaDB 10.11 and MySQL 8 allow at most 8192 partitions per table.
MAX_PARTITIONS = 8192
CATCH_ALL = "p_future"


@dataclass(frozen=True)
class Plan:
    """Boundaries to add to one table (each the exclusive upper end of a new range)."""

    table: str
    existing: tuple[dt.date, ...]
    new: tuple[dt.date, ...]
    # A min date given for a table partitioned already: new ranges go on from its
    # last boundary instead, and the command says so.
    ignored_min: dt.date | None = None

    @property
    def total(self) -> int:
        """Partitions the table will have, the catch-all included."""
        return len(self.existing) + len(self.new) + 1


def boundaries(start: dt.date, max_date: dt.date, days: int) -> list[dt.date]:
    """start + k*days for k = 1, 2, ... up to and including the first one after max_date."""
    if days < 1:
        raise PartitionError("KMDB_DAYS_PER_PARTITION must be at least 1.")
    count = max(0, (max_date - start).days) // days + 1
    return [start + dt.timedelta(days=days * k) for k in range(1, count + 1)]


def plan(
    existing: list[dt.date],
    min_date: dt.date | None,
    max_date: dt.date,
    days: int,
    table: str,
) -> Plan:
    """The boundaries to add; an already partitioned table goes on from its last boundary."""
    check_dates(min_date, max_date)
    if existing:
        start = existing[-1]
    elif min_date is None:
        raise PartitionDatesError(
            "Set KMDB_MIN_DATE (or --min-date), e.g. 2013-01-01, to partition a table the first time."
        )
    else:
        start = min_date
    new = [b for b in boundaries(start, max_date, days)] if max_date >= start else []
    ignored = min_date if existing and min_date is not None else None
    result = Plan(table, tuple(existing), tuple(new), ignored)
    if result.total > MAX_PARTITIONS:
        span = (max_date - start).days
        room = MAX_PARTITIONS - 1 - len(existing)
        fitting = max(days + 1, math.ceil((span + 1) / max(room, 1)))
        while room > 0 and len(boundaries(start, max_date, fitting)) > room:
            fitting += 1
        raise PartitionError(
            f"That plan gives {table} {result.total} partitions, more than the server's limit of "
            f"{MAX_PARTITIONS} per table; use --days {fitting} (KMDB_DAYS_PER_PARTITION={fitting}) or more."
        )
    return result


def check_dates(min_date: dt.date | None, max_date: dt.date | None) -> None:
    """Raise PartitionDatesError unless there is a max date, and it is not before the min date."""
    if max_date is None:
        raise PartitionDatesError("Set KMDB_MAX_DATE (or --max-date), e.g. 2014-03-01.")
    if min_date is not None and max_date < min_date:
        raise PartitionDatesError(
            f"The max date ({max_date}) is before the min date ({min_date}); "
            "swap them, or set --max-date to the last day of data."
        )


def existing_boundaries(conn: Connection, table: str) -> list[dt.date]:
    """The range boundaries a table has now, oldest first (none if it is not partitioned)."""
    rows = conn.execute(
        text(
            "SELECT partition_description FROM information_schema.partitions "
            "WHERE table_schema = DATABASE() AND table_name = :t AND partition_name IS NOT NULL "
            "ORDER BY partition_ordinal_position"
        ),
        {"t": table},
    ).scalars()
    found = []
    for description in rows:
        match = re.search(r"(\d{4}-\d{2}-\d{2})", description or "")
        if match:
            found.append(dt.date.fromisoformat(match.group(1)))
    return found


def _column(header: str) -> str:
    # KM's docs spell the header both "min_timestamp" and "Minimum Timestamp".
    name = header.strip().lower().replace(" ", "_")
    return name.replace("minimum", "min").replace("maximum", "max")


def dates_from_index(index_csv: str) -> tuple[dt.date, dt.date]:
    """The first and last dates of an export's index.csv (when KM received the data)."""
    rows = list(csv.reader(io.StringIO(index_csv)))
    if not rows:
        raise PartitionError("index.csv is empty; set --min-date and --max-date instead.")
    columns = [_column(h) for h in rows[0]]
    try:
        low, high = columns.index("min_timestamp"), columns.index("max_timestamp")
    except ValueError:
        raise PartitionError(
            f"index.csv has no min_timestamp and max_timestamp columns (it has {', '.join(rows[0])})."
        ) from None
    stamps = []
    for row in rows[1:]:
        try:
            stamps += [int(float(row[low])), int(float(row[high]))]
        except (IndexError, ValueError):
            continue
    if not stamps:
        raise PartitionError(
            "index.csv lists no revision with times; set --min-date and --max-date."
        )

    def day(t: int) -> dt.date:
        return dt.datetime.fromtimestamp(t, dt.UTC).date()

    return day(min(stamps)), day(max(stamps))


def _partition(boundary: dt.date) -> str:
    return f"PARTITION p_{boundary:%Y%m%d} VALUES LESS THAN ('{boundary:%Y-%m-%d} 00:00:00')"


def _ddl(p: Plan) -> str:
    parts = [_partition(b) for b in p.new]
    catch_all = f"PARTITION {CATCH_ALL} VALUES LESS THAN (MAXVALUE)"
    if p.existing:
        return (
            f"ALTER TABLE `{p.table}` REORGANIZE PARTITION {CATCH_ALL} INTO "
            f"({', '.join([*parts, catch_all])})"
        )
    return (
        f"ALTER TABLE `{p.table}` PARTITION BY RANGE COLUMNS(t) ({', '.join([*parts, catch_all])})"
    )


def plan_all(
    engine: Engine, min_date: dt.date | None, max_date: dt.date | None, days: int
) -> list[Plan]:
    """The plans of every partitionable table, each checked; nothing is changed."""
    if not is_mysql(engine):
        raise PartitionError("Partitioning is a MySQL feature; on SQLite there is nothing to do.")
    check_dates(min_date, max_date)
    assert max_date is not None  # for the type checker: check_dates raised otherwise
    with engine.connect() as conn:
        return [
            plan(existing_boundaries(conn, t.name), min_date, max_date, days, t.name)
            for t in schema.PARTITIONED
        ]


def apply(engine: Engine, plans: list[Plan]) -> None:
    """Add the planned partitions (the tables must exist)."""
    with engine.connect() as conn:
        for p in plans:
            if p.new:
                conn.execute(text(_ddl(p)))
        conn.commit()


def partition(
    engine: Engine, min_date: dt.date | None, max_date: dt.date | None, days: int
) -> list[Plan]:
    """Add partitions to every partitionable table, all plans checked before any change."""
    plans = plan_all(engine, min_date, max_date, days)
    apply(engine, plans)
    return plans
