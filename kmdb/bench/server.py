"""The MariaDB server a benchmark runs against, and the databases the run makes on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pymysql
from sqlalchemy.engine import make_url

from kmdb.load.engine import SQL_MODE


@dataclass
class MySQL:
    """The server named by --mysql-url, and the databases this run made on it."""

    url: str
    made: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        u = make_url(self.url)
        self.params: dict[str, Any] = {
            "host": u.host or "127.0.0.1",
            "port": u.port or 3306,
            "user": u.username or "root",
            "password": u.password or "",
            "charset": "utf8mb4",
        }
        self._url = u.set(drivername="mysql+pymysql")

    def connect(self, database: str | None = None, **kw: Any) -> pymysql.Connection[Any]:
        """A connection in autocommit, with kmdb's SQL mode."""
        return pymysql.connect(
            **self.params, database=database, autocommit=True, sql_mode=SQL_MODE, **kw
        )

    def create(self, name: str) -> str:
        """Create database name; return its DATABASE_URL."""
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        self.made.append(name)
        return self.url_of(name)

    def url_of(self, name: str) -> str:
        """The DATABASE_URL of database name on this server."""
        return self._url.set(database=name).render_as_string(hide_password=False)

    def drop(self, name: str) -> None:
        """Drop database name."""
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        if name in self.made:
            self.made.remove(name)

    def server(self) -> str:
        """The server's version and the settings that matter most to loading, in a line."""
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT VERSION()")
            version = _one(cur.fetchone())
            cur.execute(
                "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('innodb_buffer_pool_size', "
                "'innodb_log_file_size', 'innodb_flush_log_at_trx_commit')"
            )
            shown = dict(cur.fetchall())
        parts = [f"MariaDB/MySQL {version}"]
        for name in ("innodb_buffer_pool_size", "innodb_log_file_size"):
            if name in shown:
                parts.append(f"{name} {int(shown[name]) // 2**20} MB")
        if "innodb_flush_log_at_trx_commit" in shown:
            parts.append(
                f"innodb_flush_log_at_trx_commit {shown['innodb_flush_log_at_trx_commit']}"
            )
        return ", ".join(parts)

    def counts(self, database: str | None, queries: dict[str, str]) -> dict[str, int]:
        """The one number that each query gives, in database, by the query's name."""
        found = {}
        with self.connect(database) as conn, conn.cursor() as cur:
            for name, query in queries.items():
                cur.execute(query)
                found[name] = int(_one(cur.fetchone()))
        return found


def _one(row: tuple[Any, ...] | None) -> Any:
    """The first column of a row that a query always gives."""
    assert row is not None
    return row[0]
