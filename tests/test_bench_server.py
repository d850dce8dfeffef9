"""kmdb.bench.server: the MariaDB server a benchmark runs against, and the databases it makes."""

from __future__ import annotations

import uuid

import pymysql
import pytest

from kmdb.bench.server import MySQL
from tests.helpers import mysql_server_url


def test_databases_made_are_remembered_until_dropped(mysql_url: str) -> None:
    mysql = MySQL(mysql_server_url())
    name = f"kmdb_bench_test_{uuid.uuid4().hex[:8]}"
    url = mysql.create(name)
    try:
        assert url.startswith("mysql+pymysql://") and url.endswith(f"/{name}")
        assert mysql.made == [name]
        queries = {
            "one": "SELECT 1",
            "tables": "SELECT COUNT(*) FROM information_schema.tables "
            "WHERE table_schema = DATABASE()",
        }
        assert mysql.counts(name, queries) == {"one": 1, "tables": 0}
    finally:
        mysql.drop(name)
    assert mysql.made == []
    with pytest.raises(pymysql.err.OperationalError):
        mysql.counts(name, {"one": "SELECT 1"})


def test_the_server_line_names_its_version_and_buffer_pool(mysql_url: str) -> None:
    line = MySQL(mysql_server_url()).server()
    assert line.startswith("MariaDB/MySQL ")
    assert "innodb_buffer_pool_size " in line and " MB" in line


def test_a_url_of_any_driver_connects_with_pymysql(mysql_url: str) -> None:
    # Ruby-style mysql2:// URLs name the same server.
    mysql = MySQL(mysql_server_url().replace("mysql+pymysql://", "mysql://"))
    name = f"kmdb_bench_test_{uuid.uuid4().hex[:8]}"
    try:
        assert mysql.create(name).startswith("mysql+pymysql://")
    finally:
        mysql.drop(name)
