"""Real processes killed and services restarted in the middle of an import."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from kmdb.sample import write_sample
from tests.conftest import upload_export
from tests.helpers import BIN, run
from tests.model import assert_same, dump, expected, read_export
from tests.test_workers import _workers


def _wait_for(condition, timeout: float = 120, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError("timed out waiting")


def _kill_with_children(pid: int) -> None:
    """SIGKILL a process and its children: RQ's work horse runs in a session of its own."""
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


def _lines_imported(url: str) -> int:
    with create_engine(url).connect() as conn:
        return conn.execute(
            text("SELECT COALESCE(SUM(lines_done), 0) FROM revisions WHERE status = 'running'")
        ).scalar_one()


def test_a_worker_killed_mid_revision_resumes_exactly(
    mysql_url: str,
    redis_queue: str,
    s3_env: dict[str, str],
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 40_000, seed=8, lines_per_revision=20_000)
    bucket = f"km-{uuid.uuid4().hex[:8]}"
    upload_export(folder, bucket)
    env = {
        **cli_env,
        **s3_env,
        "DATABASE_URL": mysql_url,
        "KMDB_QUEUE": redis_queue,
        "AWS_BUCKET": bucket,
        "KMDB_BATCH_SIZE": "500",
    }
    run("kmdb-flush", env=env)
    run("kmdb-import", env=env)
    worker = subprocess.Popen(
        [str(BIN / "kmdb-work")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for(lambda: _lines_imported(mysql_url) >= 2_000)
    finally:
        _kill_with_children(worker.pid)
        worker.wait()
    with create_engine(mysql_url).connect() as conn:
        running = conn.execute(text("SELECT number FROM revisions WHERE status = 'running'")).all()
    assert running, "the kill should have caught a revision mid-import"

    # Right after the kill the job may still look alive (it is seconds old); the burst
    # workers find it dead once its lock stays free and plan it again themselves.
    again = run("kmdb-import", env=env)
    results = _workers(2, env)
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    said = again.stdout + "".join(r.stderr for r in results)
    assert "jobs of workers that died" in said
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
    write_sample(folder, 30_000, seed=12, lines_per_revision=6_000)
    bucket = f"km-{uuid.uuid4().hex[:8]}"
    upload_export(folder, bucket)
    env = {
        **cli_env,
        **s3_env,
        "DATABASE_URL": mysql_url,
        "AWS_BUCKET": bucket,
        "KMDB_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "KMDB_BATCH_SIZE": "500",
    }
    try:
        _wait_for(lambda: run("kmdb-flush", env=env, check=False).returncode == 0, timeout=20)
        run("kmdb-import", env=env)
        workers = [
            subprocess.Popen(
                [str(BIN / "kmdb-work"), "--burst"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(2)
        ]
        _wait_for(lambda: _lines_imported(mysql_url) >= 1_000)
        redis.kill()  # no persistence: the queue is gone, as after a crash
        redis.wait()
        time.sleep(2)
        redis = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        for w in workers:
            w.wait(timeout=300)  # they reconnect, find nothing left, and stop
        # The database knows what is done; a new run plans the rest.
        _wait_for(lambda: run("kmdb-import", env=env, check=False).returncode == 0, timeout=20)
        for result in _workers(2, env):
            assert result.returncode == 0, result.stderr[-3000:]
        assert_same(dump(create_engine(mysql_url)), expected(read_export(folder)))
    finally:
        redis.kill()
        redis.wait()
