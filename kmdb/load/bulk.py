"""Writing to the database: interning names, and bulk writes (LOAD DATA LOCAL on MySQL)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Table, bindparam, select, text
from sqlalchemy.exc import DBAPIError, OperationalError

from kmdb.errors import LocalInfileRefused
from kmdb.load import schema
from kmdb.load.engine import is_mysql, sending

log = logging.getLogger(__name__)

# MySQL's deadlock and lock-wait-timeout errors: the statement is safe to retry.
RETRYABLE = {1205, 1213}
LOOKUP_BATCH = 1000
T = TypeVar("T")


def retrying(action: Callable[[], T], attempts: int = 8) -> T:
    """Run action, retrying with backoff on deadlocks and lock-wait timeouts."""
    for attempt in range(attempts):
        try:
            return action()
        except OperationalError as exc:
            code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
            if code not in RETRYABLE or attempt == attempts - 1:
                raise
            delay = min(2.0, 0.05 * 2**attempt)
            log.info("Retrying after MySQL error %s in %.2fs", code, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Interner:
    """Ids for names in `keys` or `users`, inserting the missing ones.

    Inserts run in short autocommit transactions of their own, in sorted order:
    inside a long transaction a worker could not see another worker's new rows
    (REPEATABLE READ), and unsorted concurrent INSERT IGNOREs deadlock.
    """

    def __init__(self, engine: Engine, table: Table, column: str, extra: str | None = None) -> None:
        self.engine = engine
        self.table = table
        self.column = table.c[column]
        self.extra = table.c[extra] if extra else None
        self.cache: dict[str, Any] = {}
        self._mysql = is_mysql(engine)
        verb = "INSERT IGNORE" if self._mysql else "INSERT OR IGNORE"
        self._insert = text(
            f"{verb} INTO {engine.dialect.identifier_preparer.quote(table.name)} "
            f"({engine.dialect.identifier_preparer.quote(column)}) VALUES (:name)"
        )

    def lookup(self, conn: Connection, names: Sequence[str]) -> None:
        """Read the ids of names that exist into the cache, on the caller's connection."""
        if self._mysql:
            self._lookup_mysql(conn, names)
            return
        columns = [self.column, self.table.c.id] + ([self.extra] if self.extra is not None else [])
        query = select(*columns).where(self.column.in_(bindparam("names", expanding=True)))
        for part in _chunks(names, LOOKUP_BATCH):
            for row in conn.execute(query, {"names": list(part)}):
                self.cache[row[0]] = row[1] if self.extra is None else (row[1], row[2])

    # On MySQL the statements go to PyMySQL's cursor directly: SQLAlchemy's expanding
    # IN cost more than the queries themselves. The names are bound as parameters,
    # which PyMySQL quotes for the connection's own mode (never by hand: a server
    # with NO_BACKSLASH_ESCAPES reads a backslash-escaped quote as the string's end).
    def _lookup_mysql(self, conn: Connection, names: Sequence[str]) -> None:
        extra = f", `{self.extra.name}`" if self.extra is not None else ""
        head = f"SELECT `{self.column.name}`, id{extra} FROM `{self.table.name}` WHERE `{self.column.name}` IN ("
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            for part in _chunks(names, LOOKUP_BATCH):
                cursor.execute(head + ",".join(["%s"] * len(part)) + ")", part)
                if self.extra is None:
                    self.cache.update(cursor.fetchall())
                else:
                    for name, id_, more in cursor.fetchall():
                        self.cache[name] = (id_, more)
        finally:
            cursor.close()

    def _insert_mysql(self, conn: Connection, names: Sequence[str]) -> None:
        sql = f"INSERT IGNORE INTO `{self.table.name}` (`{self.column.name}`) VALUES ("
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql + "),(".join(["%s"] * len(names)) + ")", names)
        finally:
            cursor.close()

    def ids(self, names: Iterable[str]) -> dict[str, Any]:
        """The cache, holding every one of names (id, or (id, extra) with an extra column)."""
        wanted = sorted({n for n in names if n not in self.cache})
        if not wanted:
            return self.cache
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            self.lookup(conn, wanted)
            missing = [n for n in wanted if n not in self.cache]
            if missing:
                for part in _chunks(missing, LOOKUP_BATCH):
                    if self._mysql:
                        retrying(lambda part=part: self._insert_mysql(conn, part))
                    else:
                        retrying(
                            lambda part=part: conn.execute(
                                self._insert, [{"name": n} for n in part]
                            )
                        )
                self.lookup(conn, missing)
        lost = [n for n in wanted if n not in self.cache]
        if lost:
            raise RuntimeError(f"{len(lost)} names of {self.table.name} could not be interned")
        return self.cache


# --- Bulk writes --------------------------------------------------------------

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


def _tsv_line(row: tuple) -> str:
    return "\t".join(map(_field, row)) + "\n"


def _event_line(row: tuple) -> str:
    # (id, t, n, user_id, identity_id): numbers and a time literal, nothing to escape.
    return "{}\t{}\t{}\t{}\t{}\n".format(*row)


def _property_line(row: tuple) -> str:
    id_, t, key, value, user_id, event_id, identity_id = row
    event = "\\N" if event_id is None else event_id
    return f"{id_}\t{t}\t{key}\t{value.translate(_ESCAPE)}\t{user_id}\t{event}\t{identity_id}\n"


# Formatting rows is the hot path of a MySQL import; the two big tables get their own.
_LINE_FORMATS = {"events": _event_line, "properties": _property_line}


def field(value: object) -> str:
    """One value as a LOAD DATA field: NULL as \\N, and \\, tab, newline and NUL escaped."""
    return _field(value)


@dataclass
class Staged:
    """Rows ready to load: a file LOAD DATA LOCAL reads on MySQL, the rows themselves on SQLite."""

    table: Table
    columns: Sequence[str]
    rows: list[tuple]
    path: str | None = None

    def discard(self) -> None:
        """Remove the file, if any."""
        if self.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self.path = None


def stage_rows(
    engine: Engine,
    table: Table,
    columns: Sequence[str],
    rows: list[tuple] | list[str],
    tmp_dir: str | None,
) -> Staged:
    """Prepare rows for load_staged; on MySQL this writes the load file (outside any transaction).

    Rows are tuples, or on MySQL lines already in LOAD DATA form (with their newline).
    """
    staged = Staged(table, columns, rows)
    if not rows or not is_mysql(engine):
        return staged
    folder = tmp_dir or tempfile.gettempdir()
    os.makedirs(folder, exist_ok=True)
    # The file is ours alone: written here, read by LOAD DATA LOCAL, then removed.
    staged.path = os.path.join(folder, f"kmdb-{table.name}-{os.getpid()}-{uuid.uuid4().hex}.tsv")
    # Mode 0600, and never through a symlink: the rows are a private export's.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    with open(os.open(staged.path, flags, 0o600), "w", encoding="utf-8", newline="\n") as out:
        if isinstance(rows[0], str):
            out.write("".join(rows))  # type: ignore[arg-type]
        else:
            out.write("".join(map(_LINE_FORMATS.get(table.name, _tsv_line), rows)))
    staged.rows = []
    return staged


# The names stage_rows gives its files; a file of a process killed in the middle of
# a chunk stays behind, and one older than an hour is such a leftover (a chunk's
# file lives for the seconds its load takes).
_LOAD_FILE = re.compile(r"kmdb-[a-z_]+-\d+-[0-9a-f]{32}\.tsv")
STALE_AFTER = 3600.0


def remove_old_files(folder: str, older_than: float, named: re.Pattern[str] | None = None) -> int:
    """Delete the files in folder (named so, if given) not changed for older_than seconds;
    return how many. A folder that cannot be read has none."""
    cutoff = time.time() - older_than
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if named is not None and not named.fullmatch(entry.name):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
    return removed


def remove_stale_load_files(tmp_dir: str | None) -> int:
    """Delete load files that killed processes left in the staging folder; return how many."""
    folder = tmp_dir or tempfile.gettempdir()
    removed = remove_old_files(folder, STALE_AFTER, _LOAD_FILE)
    if removed:
        log.info("Removed %s load files that killed processes left in %s.", removed, folder)
    return removed


def load_staged(conn: Connection, staged: Staged, ignore_duplicates: bool = False) -> None:
    """Insert staged rows inside the caller's transaction, by LOAD DATA LOCAL on MySQL.

    With ignore_duplicates, a row whose primary key is taken is skipped.
    """
    if staged.path is None:
        if staged.rows:
            names = ", ".join(f'"{c}"' for c in staged.columns)
            marks = ", ".join("?" for _ in staged.columns)
            verb = "INSERT OR IGNORE" if ignore_duplicates else "INSERT"
            conn.exec_driver_sql(
                f'{verb} INTO "{staged.table.name}" ({names}) VALUES ({marks})', staged.rows
            )
        return
    names = ", ".join(f"`{c}`" for c in staged.columns)
    # The path and the field options are bound, so that no backslash in the SQL text
    # depends on the session's sql_mode.
    try:
        with sending(conn.connection.driver_connection, staged.path):
            conn.exec_driver_sql(
                f"LOAD DATA LOCAL INFILE %s {'IGNORE ' if ignore_duplicates else ''}"
                f"INTO TABLE `{staged.table.name}` CHARACTER SET utf8mb4 "
                f"FIELDS TERMINATED BY %s ESCAPED BY %s LINES TERMINATED BY %s ({names})",
                (staged.path, "\t", "\\", "\n"),
            )
    except DBAPIError as exc:
        code, reason = _error_code(exc)
        if code in LOCAL_INFILE_REFUSED:
            raise LocalInfileRefused(code, reason) from exc
        raise


# Server errors for a LOAD DATA LOCAL that the server's local_infile=OFF refuses: MariaDB's
# "not allowed with this MariaDB version" (1148) and "disabled the local infile
# capability" (4166), MySQL 8's "Loading local data is disabled" (3948).
LOCAL_INFILE_REFUSED = {1148, 3948, 4166}


def _error_code(exc: DBAPIError) -> tuple[int | None, str]:
    """The driver's error number and message, when the driver gave them."""
    args = getattr(exc.orig, "args", None) or ()
    code = args[0] if args and isinstance(args[0], int) else None
    return code, str(args[-1]) if args else str(exc)


def bulk_insert(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: list[tuple],
    tmp_dir: str | None = None,
) -> None:
    """Insert rows inside the caller's transaction: LOAD DATA LOCAL on MySQL, executemany elsewhere."""
    if not rows:
        return
    staged = stage_rows(conn.engine, table, columns, rows, tmp_dir)
    try:
        load_staged(conn, staged)
    finally:
        staged.discard()


# MySQL client errors for a server that went away or cannot be reached (yet).
CONNECTION_LOST = {2003, 2006, 2013, 2055}


def is_transient(exc: BaseException) -> bool:
    """Whether a failure is worth retrying: a lost connection, a deadlock, a network error."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import ReadTimeoutError

    from kmdb.errors import DatabaseUnavailable

    if isinstance(exc, DatabaseUnavailable):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, (BotoConnectionError, ReadTimeoutError, ConnectionError)):
        return True
    cause = exc.__cause__
    if cause is not None and cause is not exc and is_transient(cause):
        return True
    orig = getattr(exc, "orig", None)
    code = orig.args[0] if orig is not None and getattr(orig, "args", None) else None
    return code in RETRYABLE or code in CONNECTION_LOST


EVENT_COLUMNS = ("id", "t", "n", "user_id", "identity_id")
PROPERTY_COLUMNS = ("id", "t", "key", "value", "user_id", "event_id", "identity_id")
SIGHTING_COLUMNS = ("revision", "line", "name1", "name2", "t")
REJECTED_COLUMNS = ("revision", "line", "reason", "text")

TABLES = {
    "events": (schema.events, EVENT_COLUMNS),
    "properties": (schema.properties, PROPERTY_COLUMNS),
    "alias_sightings": (schema.alias_sightings, SIGHTING_COLUMNS),
    "rejected_lines": (schema.rejected_lines, REJECTED_COLUMNS),
}
