"""Bulk writes: rows staged in a file and loaded by LOAD DATA LOCAL on MySQL, executemany on SQLite.

A chunk's rows are staged outside its transaction (stage_rows writes the load
file while the previous chunk loads), then loaded inside it (load_staged), so
that the transaction holds its locks only while the server reads the file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table
from sqlalchemy.exc import DBAPIError

from kmdb.errors import LocalInfileRefused, driver_error
from kmdb.extract.private import STALE_AFTER, remove_old_files
from kmdb.load import schema
from kmdb.load.engine import is_mysql, sending
from kmdb.transform.rows import tsv_lines

log = logging.getLogger(__name__)


@dataclass
class Staged:
    """Rows ready to load: a file LOAD DATA LOCAL reads on MySQL, the rows themselves on SQLite."""

    table: Table
    columns: Sequence[str]
    rows: list[tuple[Any, ...]]
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
    rows: list[tuple[Any, ...]] | list[str],
    tmp_dir: str | None,
) -> Staged:
    """Prepare rows for load_staged; on MySQL this writes the load file (outside any transaction).

    Rows are tuples, or on MySQL lines already in LOAD DATA form (with their newline).
    """
    if not rows or not is_mysql(engine):
        return Staged(table, columns, cast("list[tuple[Any, ...]]", rows))
    staged = Staged(table, columns, [])
    folder = tmp_dir or tempfile.gettempdir()
    os.makedirs(folder, exist_ok=True)
    # The file is ours alone: written here, read by LOAD DATA LOCAL, then removed.
    staged.path = os.path.join(folder, f"kmdb-{table.name}-{os.getpid()}-{uuid.uuid4().hex}.tsv")
    # Mode 0600, and never through a symlink: the rows are a private export's.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    with open(os.open(staged.path, flags, 0o600), "w", encoding="utf-8", newline="\n") as out:
        if isinstance(rows[0], str):
            out.write("".join(rows))
        else:
            out.write(tsv_lines(table.name, rows))
    return staged


# The names stage_rows gives its files; a file of a process killed in the middle of
# a chunk stays behind, and one older than STALE_AFTER is such a leftover.
_LOAD_FILE = re.compile(r"kmdb-[a-z_]+-\d+-[0-9a-f]{32}\.tsv")


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
        code, reason = driver_error(exc)
        if code in LOCAL_INFILE_REFUSED:
            raise LocalInfileRefused(code, reason) from exc
        raise


# Server errors for a LOAD DATA LOCAL that the server's local_infile=OFF refuses: MariaDB's
# "not allowed with this MariaDB version" (1148) and "disabled the local infile
# capability" (4166), MySQL 8's "Loading local data is disabled" (3948).
LOCAL_INFILE_REFUSED = {1148, 3948, 4166}


def bulk_insert(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: list[tuple[Any, ...]],
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
