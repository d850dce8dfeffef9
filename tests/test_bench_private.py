"""kmdb.bench.private: servers of a run's own, started with the settings under test.

The tests that kill and restart them (test_faults, test_lifecycle) use them through
tests/helpers.py; here, that the settings given reach the server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pymysql
import pytest
from redis import Redis

from kmdb.bench.private import PrivateMariaDB, PrivateRedis
from kmdb.bench.server import MySQL
from kmdb.errors import BenchError
from tests.helpers import unavailable


def test_a_private_mariadb_runs_with_the_settings_given(tmp_path: Path) -> None:
    if shutil.which("mariadbd") is None:
        unavailable("mariadbd", FileNotFoundError("not on PATH"))
    server = PrivateMariaDB(tmp_path, "--innodb-buffer-pool-size=96M")
    server.start()
    try:
        assert "innodb_buffer_pool_size 96 MB" in MySQL(server.server_url).server()
        assert server.url == f"{server.server_url}/kmdb"
        with (
            pymysql.connect(host="127.0.0.1", port=server.port, user="root") as conn,
            conn.cursor() as cur,
        ):
            cur.execute("SHOW DATABASES LIKE 'kmdb'")
            assert cur.fetchall() == (("kmdb",),)
    finally:
        server.stop()
    assert server.process is not None and server.process.poll() is not None


def test_a_mariadb_that_refuses_its_settings_is_a_sentence(tmp_path: Path) -> None:
    if shutil.which("mariadbd") is None:
        unavailable("mariadbd", FileNotFoundError("not on PATH"))
    server = PrivateMariaDB(tmp_path, "--no-such-setting=1")
    try:
        with pytest.raises(BenchError, match="mariadbd --no-such-setting=1 exited at its start"):
            server.start()
    finally:
        server.stop()


def test_a_private_redis_answers_and_is_gone_when_stopped(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        unavailable("redis-server", FileNotFoundError("not on PATH"))
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    try:
        assert Redis.from_url(server.url).ping()
    finally:
        server.stop()
    assert server.process is not None and server.process.returncode is not None
