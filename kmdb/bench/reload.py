"""The yardstick: the final tables dumped as kmdb writes them, emptied, and loaded back with
LOAD DATA LOCAL INFILE on the same server, in the same run as the imports it is compared with."""

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
from kmdb.transform.rows import field as load_field

DUMPED = ("keys", "users", "aliases", "events", "properties")


def _checksums(conn: pymysql.Connection[Any]) -> dict[str, int]:
    with conn.cursor() as cur:
        cur.execute("CHECKSUM TABLE " + ", ".join(f"`{t}`" for t in DUMPED))
        return {name.rsplit(".", 1)[-1]: value for name, value in cur.fetchall()}


def reload(
    mysql: MySQL, database: str, folder: Path, server_pid: int | None
) -> tuple[float, dict[str, tuple[int, float]], float]:
    """Dump the final tables as kmdb.load writes them, empty them, time LOAD DATA LOCAL of the dumps.

    Returns the seconds of all the loads, (rows, seconds) per table, and the
    server's CPU seconds meanwhile; BenchError if the tables come back other
    than they were.
    """
    folder.mkdir(parents=True, exist_ok=True)
    dumped: dict[str, tuple[Path, list[str], int]] = {}
    with mysql.connect(database, local_infile=True) as conn:
        before = _checksums(conn)
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
        with conn.cursor() as cur:
            for table in DUMPED:
                cur.execute(f"TRUNCATE TABLE `{table}`")
        per_table: dict[str, tuple[int, float]] = {}
        total = 0.0
        server_cpu = cpu_seconds(server_pid)
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
        server_cpu = cpu_seconds(server_pid) - server_cpu
        after = _checksums(conn)
        if after != before:
            raise BenchError(f"The reload changed the tables: checksums {before} -> {after}")
    return total, per_table, server_cpu
