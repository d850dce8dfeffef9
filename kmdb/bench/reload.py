"""The yardsticks: the final tables dumped as kmdb writes them and loaded back with LOAD DATA
LOCAL INFILE on the same server, in the same run as the imports they are compared with.

- reload: into the same tables, emptied, their indexes kept up to date row by row;
- bulk_path: into a fresh copy of the tables without their secondary indexes, which are
  then built (a table's in one ALTER, the tables side by side, as kmdb builds its own):
  the database's best bulk path for those rows.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pymysql
import pymysql.cursors

from kmdb.bench.measure import cpu_seconds
from kmdb.bench.server import MySQL
from kmdb.errors import BenchError
from kmdb.load.engine import sending
from kmdb.load.indexes import side_by_side
from kmdb.transform.rows import field as load_field

DUMPED = ("keys", "users", "aliases", "events", "properties")

Dumped = dict[str, tuple[Path, list[str], int]]  # table -> (file, columns, rows)


def _checksums(conn: pymysql.Connection[Any]) -> dict[str, int]:
    with conn.cursor() as cur:
        cur.execute("CHECKSUM TABLE " + ", ".join(f"`{t}`" for t in DUMPED))
        return {name.rsplit(".", 1)[-1]: value for name, value in cur.fetchall()}


def _dump(conn: pymysql.Connection[Any], folder: Path) -> Dumped:
    """Write each table of DUMPED to folder/TABLE.tsv as kmdb.load writes its files."""
    folder.mkdir(parents=True, exist_ok=True)
    dumped: Dumped = {}
    for table in DUMPED:
        with conn.cursor() as cur:
            cur.execute(f"SHOW COLUMNS FROM `{table}`")
            columns = [row[0] for row in cur.fetchall()]
        path = folder / f"{table}.tsv"
        rows = 0
        with (
            conn.cursor(pymysql.cursors.SSCursor) as cur,
            open(path, "w", encoding="utf-8", newline="\n") as out,
        ):
            cur.execute(f"SELECT {', '.join(f'`{c}`' for c in columns)} FROM `{table}`")
            while batch := cur.fetchmany(10_000):
                out.writelines("\t".join(map(load_field, row)) + "\n" for row in batch)
                rows += len(batch)
        dumped[table] = (path, columns, rows)
    return dumped


def _load(
    conn: pymysql.Connection[Any], dumped: Dumped
) -> tuple[float, dict[str, tuple[int, float]]]:
    """LOAD DATA LOCAL each dump into its table; the seconds of all, and (rows, seconds) per table."""
    per_table: dict[str, tuple[int, float]] = {}
    total = 0.0
    with conn.cursor() as cur:
        for table in DUMPED:
            path, columns, rows = dumped[table]
            sql = (
                f"LOAD DATA LOCAL INFILE %s INTO TABLE `{table}` CHARACTER SET utf8mb4 "
                "FIELDS TERMINATED BY %s ESCAPED BY %s LINES TERMINATED BY %s "
                f"({', '.join(f'`{c}`' for c in columns)})"
            )
            started = time.perf_counter()
            with sending(conn, str(path)):
                loaded = cur.execute(sql, (str(path), "\t", "\\", "\n"))
            took = time.perf_counter() - started
            total += took
            per_table[table] = (rows, took)
            cur.execute("SHOW WARNINGS")
            warnings = cur.fetchall()
            if loaded != rows or warnings:
                raise BenchError(
                    f"Reloading {table}: {loaded} of {rows} rows, warnings {warnings[:3]}"
                )
    return total, per_table


def reload(
    mysql: MySQL, database: str, folder: Path, server_pid: int | None
) -> tuple[float, dict[str, tuple[int, float]], float]:
    """Dump the final tables as kmdb.load writes them, empty them, time LOAD DATA LOCAL of the dumps.

    Returns the seconds of all the loads, (rows, seconds) per table, and the
    server's CPU seconds meanwhile; BenchError if the tables come back other
    than they were.
    """
    with mysql.connect(database, local_infile=True) as conn:
        before = _checksums(conn)
        dumped = _dump(conn, folder)
        with conn.cursor() as cur:
            for table in DUMPED:
                cur.execute(f"TRUNCATE TABLE `{table}`")
        server_cpu = cpu_seconds(server_pid)
        total, per_table = _load(conn, dumped)
        server_cpu = cpu_seconds(server_pid) - server_cpu
        after = _checksums(conn)
        if after != before:
            raise BenchError(f"The reload changed the tables: checksums {before} -> {after}")
    return total, per_table, server_cpu


def _secondary_indexes(conn: pymysql.Connection[Any], table: str) -> list[str]:
    """ALTER TABLE clauses that add each secondary index of table back, as it is now."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT index_name, non_unique, column_name, sub_part FROM information_schema.statistics "
            "WHERE table_schema = DATABASE() AND table_name = %s AND index_name <> 'PRIMARY' "
            "ORDER BY index_name, seq_in_index",
            (table,),
        )
        found: dict[str, tuple[bool, list[str]]] = {}
        for name, non_unique, column, sub_part in cur.fetchall():
            columns = found.setdefault(name, (not int(non_unique), []))[1]
            columns.append(f"`{column}`" + (f"({sub_part})" if sub_part else ""))
    return [
        f"ADD {'UNIQUE ' if unique else ''}INDEX `{name}` ({', '.join(columns)})"
        for name, (unique, columns) in found.items()
    ]


def bulk_path(
    mysql: MySQL, database: str, folder: Path
) -> tuple[float, dict[str, tuple[int, float]], float]:
    """Time the best bulk path for database's final rows: LOAD DATA LOCAL of their dumps into a
    fresh copy of the tables without secondary indexes, then the indexes built.

    Returns the seconds of the loads and the builds together, (rows, seconds) per
    table loaded, and the seconds of the builds; BenchError unless the copy's rows
    are the tables' own. The copy (database _bulk) is dropped again.
    """
    copy = f"{database}_bulk"[:64]
    with mysql.connect(database, local_infile=True) as conn:
        before = _checksums(conn)
        dumped = _dump(conn, folder)
        adding = {t: _secondary_indexes(conn, t) for t in DUMPED}
    mysql.drop(copy)
    mysql.create(copy)
    try:
        with mysql.connect(copy, local_infile=True) as conn:
            with conn.cursor() as cur:
                for table in DUMPED:
                    cur.execute(f"CREATE TABLE `{table}` LIKE `{database}`.`{table}`")
                    if adding[table]:
                        drops = (f"DROP INDEX `{a.split('`')[1]}`" for a in adding[table])
                        cur.execute(f"ALTER TABLE `{table}` {', '.join(drops)}")
            started = time.perf_counter()
            loads, per_table = _load(conn, dumped)
            _build_side_by_side(mysql, copy, adding)
            total = time.perf_counter() - started
            after = _checksums(conn)
        if after != before:
            raise BenchError(f"The bulk path's rows differ: checksums {before} -> {after}")
    finally:
        mysql.drop(copy)
    return total, per_table, total - loads


def _build_side_by_side(mysql: MySQL, database: str, adding: dict[str, list[str]]) -> None:
    """Each table's indexes in one ALTER TABLE, the tables in threads of their own."""

    def build(table: str) -> None:
        with mysql.connect(database) as conn, conn.cursor() as cur:
            cur.execute(f"ALTER TABLE `{table}` {', '.join(adding[table])}")

    side_by_side(build, [t for t in DUMPED if adding[t]])
