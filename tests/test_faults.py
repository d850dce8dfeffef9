"""Real processes killed and services restarted in the middle of an import."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pymysql
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from tests.conftest import sample_bucket
from tests.helpers import BIN, burst_workers, run, start_burst_workers
from tests.model import assert_same, dump, expected, read_export


def _wait_for(
    condition, timeout: float = 120, every: float = 0.2, shown: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    # The log of the process waited on, when there is one, says why it did not get there.
    said = shown.read_text()[-4000:] if shown is not None else ""
    raise AssertionError(f"timed out waiting\n{said}")


def _kill_with_children(pid: int) -> None:
    """SIGKILL a process and any process it started (none should outlive it)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    for child in children:
        os.kill(child, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)


def _processes_of(queue: str) -> list[int]:
    """Processes whose environment names this queue."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"KMDB_QUEUE={queue}".encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


_engines: dict[str, Engine] = {}


def _lines_imported(url: str) -> int:
    # One engine per database: a new engine per poll made polls slow enough, on a cold
    # machine, to miss the seconds in which a revision is running.
    engine = _engines.setdefault(url, create_engine(url, poolclass=NullPool))
    with engine.connect() as conn:
        return conn.execute(
            # Parts record their progress with each chunk they commit.
            text(
                "SELECT COALESCE(SUM(lines_done - start_line + 1), 0) FROM revision_parts "
                "WHERE status = 'running'"
            )
        ).scalar_one()


def test_a_worker_killed_mid_revision_resumes_exactly(
    mysql_url: str,
    redis_queue: str,
    s3_env: dict[str, str],
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "export"
    bucket = sample_bucket(folder, 40_000, seed=8, lines_per_revision=20_000)
    env = {
        **cli_env,
        **s3_env,
        "DATABASE_URL": mysql_url,
        "KMDB_QUEUE": redis_queue,
        "AWS_BUCKET": bucket,
        # Small chunks keep each part running long enough to be seen (and killed) mid-way.
        "KMDB_BATCH_SIZE": "100",
        # Several parts per revision: the killed job is one part, found dead by its own lock.
        "KMDB_PART_SIZE": "1000000",
    }
    run("kmdb-flush", env=env)
    run("kmdb-import", env=env)
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [str(BIN / "kmdb-work")], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_for(lambda: _lines_imported(mysql_url) >= 2_000, every=0.05, shown=log)
    finally:
        # The worker runs its jobs itself (no work horse): the job dies with it.
        _kill_with_children(worker.pid)
        worker.wait()
    with create_engine(mysql_url).connect() as conn:
        running = conn.execute(text("SELECT number FROM revisions WHERE status = 'running'")).all()
    assert running, "the kill should have caught a revision mid-import"

    # Right after the kill the job may still look alive (it is seconds old); the burst
    # workers find it dead once its lock stays free and plan it again themselves.
    again = run("kmdb-import", env=env)
    results = burst_workers(2, env)
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    said = again.stdout + "".join(r.stderr for r in results)
    assert "jobs of workers that died" in said
    # Nothing of the killed worker lingers (RQ's scheduler process would, were it started).
    _wait_for(lambda: not _processes_of(redis_queue), timeout=30)
    assert_same(dump(create_engine(mysql_url)), expected(read_export(folder)))


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_redis_restarting_mid_import_still_ends_exact(
    mysql_url: str, s3_env: dict[str, str], cli_env: dict[str, str], tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = tmp_path / "redis"
    data.mkdir()
    args = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data),
        "--save",
        "",
    ]
    redis = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    folder = tmp_path / "export"
    # One file in small chunks: its part runs for a second or more, long enough to be seen.
    # (Five files in chunks of 500 lines ran 0.1 s each, and a poll could miss all five.)
    bucket = sample_bucket(folder, 30_000, seed=12, lines_per_revision=30_000)
    env = {
        **cli_env,
        **s3_env,
        "DATABASE_URL": mysql_url,
        "AWS_BUCKET": bucket,
        "KMDB_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "KMDB_BATCH_SIZE": "100",
    }
    try:
        _wait_for(lambda: run("kmdb-flush", env=env, check=False).returncode == 0, timeout=20)
        run("kmdb-import", env=env)
        log = tmp_path / "workers.log"
        with log.open("a") as out:  # both workers' output, shown if the wait times out
            workers = [
                subprocess.Popen(
                    [str(BIN / "kmdb-work"), "--burst"], env=env, stdout=out, stderr=out
                )
                for _ in range(2)
            ]
        _wait_for(lambda: _lines_imported(mysql_url) >= 1_000, every=0.05, shown=log)
        redis.kill()  # no persistence: the queue is gone, as after a crash
        redis.wait()
        time.sleep(2)
        redis = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        for w in workers:
            w.wait(timeout=300)  # they reconnect, find nothing left, and stop
        # The database knows what is done; a new run plans the rest.
        _wait_for(lambda: run("kmdb-import", env=env, check=False).returncode == 0, timeout=20)
        for result in burst_workers(2, env):
            assert result.returncode == 0, result.stderr[-3000:]
        assert_same(dump(create_engine(mysql_url)), expected(read_export(folder)))
    finally:
        redis.kill()
        redis.wait()


class PrivateMariaDB:
    """A MariaDB server of the test's own, on its own port, that the test may stop and start."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.process: subprocess.Popen | None = None
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
    def url(self) -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/kmdb"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={self.folder / 'data'}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.folder / 'sock'}",
                "--user=root",
                "--innodb-buffer-pool-size=64M",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def up() -> bool:
            try:
                pymysql.connect(host="127.0.0.1", port=self.port, user="root").close()
                return True
            except pymysql.MySQLError:
                return False

        _wait_for(up, timeout=60)
        with pymysql.connect(
            host="127.0.0.1", port=self.port, user="root", autocommit=True
        ) as conn:
            conn.cursor().execute("CREATE DATABASE IF NOT EXISTS kmdb")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()  # a crash, not a clean shutdown
        self.process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.skipif(shutil.which("mariadbd") is None, reason="needs mariadbd")
def test_mariadb_crashing_mid_import_still_ends_exact(
    redis_queue: str, s3_env: dict[str, str], cli_env: dict[str, str], tmp_path: Path
) -> None:
    server = PrivateMariaDB(tmp_path / "mariadb")
    server.start()
    folder = tmp_path / "export"
    bucket = sample_bucket(folder, 30_000, seed=13, lines_per_revision=30_000)  # as above
    env = {
        **cli_env,
        **s3_env,
        "DATABASE_URL": server.url,
        "AWS_BUCKET": bucket,
        "KMDB_QUEUE": redis_queue,
        "KMDB_BATCH_SIZE": "100",
    }
    try:
        run("kmdb-flush", env=env)
        run("kmdb-import", env=env)
        workers = start_burst_workers(2, env, capture=True)
        _wait_for(lambda: _lines_imported(server.url) >= 1_000, every=0.05)
        server.kill()
        time.sleep(3)
        server.start()
        errors = ""
        for w in workers:
            _, err = w.communicate(timeout=400)
            errors += err
            assert w.returncode == 0, err[-3000:]
        status = run("kmdb-status", env=env).stdout
        assert "1 known, 1 imported" in status, status + errors[-5000:]
        assert_same(dump(create_engine(server.url)), expected(read_export(folder)))
    finally:
        if server.process and server.process.poll() is None:
            server.kill()
