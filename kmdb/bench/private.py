"""Servers of a run's own: a MariaDB or Redis server on a free port, started and stopped by the
caller. The scale benchmark runs on them (a Redis whose command statistics are its alone, a
MariaDB with the settings under test); the tests use them to kill and restart a server.

The shared servers' settings are never changed: settings under test go to a private one.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pymysql

from kmdb.bench.s3 import free_port
from kmdb.errors import BenchError


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not answer within {timeout:.0f} s.")
        time.sleep(0.05)


class PrivateServer:
    """A server process of the caller's own."""

    process: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        """A crash, not a clean shutdown: what it has not written to disk is gone."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        """Kill it if it still runs: nothing of it is kept."""
        if self.process is not None and self.process.poll() is None:
            self.kill()


class PrivateMariaDB(PrivateServer):
    """A mariadbd of its own, on its own port, with a data folder of its own in folder.

    server_args go to mariadbd after its own (e.g. "--local-infile=0",
    "--innodb-buffer-pool-size=1G"); it reads no option files (--no-defaults).
    """

    def __init__(self, folder: Path, *server_args: str) -> None:
        self.folder = folder
        self.server_args = server_args
        self.port = free_port()
        subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={folder / 'data'}",
                "--user=root",
                "--auth-root-authentication-method=normal",
            ],
            check=True,
            capture_output=True,
        )

    @property
    def server_url(self) -> str:
        """Its URL, without a database."""
        return f"mysql+pymysql://root@127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The URL of its database kmdb."""
        return f"{self.server_url}/kmdb"

    def start(self, timeout: float = 60) -> None:
        """Start the server, wait until it answers, and make the kmdb database if missing."""
        self.process = subprocess.Popen(
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={self.folder / 'data'}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.folder / 'sock'}",
                "--user=root",
                *self.server_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def up() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise BenchError(f"mariadbd {' '.join(self.server_args)} exited at its start.")
            try:
                pymysql.connect(host="127.0.0.1", port=self.port, user="root").close()
                return True
            except pymysql.MySQLError:
                return False

        _wait(up, timeout, "mariadbd")
        with pymysql.connect(
            host="127.0.0.1", port=self.port, user="root", autocommit=True
        ) as conn:
            conn.cursor().execute("CREATE DATABASE IF NOT EXISTS kmdb")


class PrivateRedis(PrivateServer):
    """A redis-server of its own, on its own port, that keeps nothing on disk unless asked.

    extra_args go to redis-server (e.g. "--appendonly", "yes"); with password, it asks for it.
    """

    def __init__(self, folder: Path, *extra_args: str, password: str | None = None) -> None:
        folder.mkdir()
        self.port = free_port()
        self.password = password
        self.args = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(folder),
            "--save",
            "",
            *extra_args,
        ]
        if password is not None:
            self.args += ["--requirepass", password]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30) -> None:
        """Start the server and wait until it answers."""
        from redis import Redis
        from redis.exceptions import RedisError

        self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL)

        def up() -> bool:
            client = Redis(
                host="127.0.0.1", port=self.port, password=self.password, socket_connect_timeout=1
            )
            try:
                return bool(client.ping())
            except RedisError:
                return False

        _wait(up, timeout, "redis-server")
