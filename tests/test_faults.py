"""kmdb.faults (pauses at the stages of the job graph, for tests), and real processes killed
and services restarted in the middle of an import."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.helpers import (
    PrivateRedis,
    burst_workers,
    burst_workers_ok,
    enqueue_sample,
    kill_with_children,
    kmdb_env,
    lines_imported,
    run,
    running_mariadb,
    start_logged,
    wait_for,
)
from tests.model import assert_same, dump, expected, read_export


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


def test_a_worker_killed_mid_revision_resumes_exactly(
    mysql_url: str,
    redis_queue: str,
    s3_env: dict[str, str],
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "export"
    env = kmdb_env(
        cli_env,
        mysql_url,
        redis_queue,
        s3_env,
        # Small chunks keep each part running long enough to be seen (and killed) mid-way.
        KMDB_BATCH_SIZE="100",
        # Several parts per revision: the killed job is one part, found dead by its own lock.
        KMDB_PART_SIZE="1000000",
    )
    _, env = enqueue_sample(folder, env, 40_000, seed=8, lines_per_revision=20_000)
    log = tmp_path / "worker.log"
    worker = start_logged("kmdb-work", env=env, log=log)
    try:
        wait_for(lambda: lines_imported(mysql_url) >= 2_000, every=0.05, shown=log)
    finally:
        # The worker runs its jobs itself (no work horse): the job dies with it.
        kill_with_children(worker.pid)
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
    wait_for(lambda: not _processes_of(redis_queue), timeout=30)
    assert_same(dump(create_engine(mysql_url)), expected(read_export(folder)))


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_redis_restarting_mid_import_still_ends_exact(
    mysql_url: str, s3_env: dict[str, str], cli_env: dict[str, str], tmp_path: Path
) -> None:
    redis = PrivateRedis(tmp_path / "redis")  # no persistence
    redis.start()
    folder = tmp_path / "export"
    # One file in small chunks: its part runs for a second or more, long enough to be seen.
    # (Five files in chunks of 500 lines ran 0.1 s each, and a poll could miss all five.)
    env = kmdb_env(
        cli_env, mysql_url, None, s3_env, KMDB_REDIS_URL=redis.url, KMDB_BATCH_SIZE="100"
    )
    try:
        _, env = enqueue_sample(folder, env, 30_000, seed=12, lines_per_revision=30_000)
        log = tmp_path / "workers.log"
        # Both workers' output in one log, shown if the wait times out.
        workers = [start_logged("kmdb-work", "--burst", env=env, log=log) for _ in range(2)]
        wait_for(lambda: lines_imported(mysql_url) >= 1_000, every=0.05, shown=log)
        redis.kill()  # no persistence: the queue is gone, as after a crash
        # Down until the workers have found it gone.
        wait_for(lambda: "Redis does not answer" in log.read_text(), timeout=120, shown=log)
        redis.start()
        for w in workers:
            w.wait(timeout=300)  # they reconnect, find nothing left, and stop
        # The database knows what is done; a new run plans the rest.
        wait_for(lambda: run("kmdb-import", env=env, check=False).returncode == 0, timeout=20)
        burst_workers_ok(2, env)
        assert_same(dump(create_engine(mysql_url)), expected(read_export(folder)))
    finally:
        redis.stop()


def test_mariadb_crashing_mid_import_still_ends_exact(
    redis_queue: str, s3_env: dict[str, str], cli_env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    with running_mariadb(tmp_path / "mariadb") as server:
        env = kmdb_env(cli_env, server.url, redis_queue, s3_env, KMDB_BATCH_SIZE="100")
        # One file in small chunks, as above.
        _, env = enqueue_sample(folder, env, 30_000, seed=13, lines_per_revision=30_000)
        log = tmp_path / "workers.log"
        workers = [start_logged("kmdb-work", "--burst", env=env, log=log) for _ in range(2)]
        wait_for(lambda: lines_imported(server.url) >= 1_000, every=0.05, shown=log)
        server.kill()
        # Down until a job has lost it.
        wait_for(lambda: "Lost the database" in log.read_text(), timeout=120, shown=log)
        server.start()
        for w in workers:
            w.wait(timeout=400)
            assert w.returncode == 0, log.read_text()[-3000:]
        status = run("kmdb-status", env=env).stdout
        assert "1 known, 1 imported" in status, status + log.read_text()[-5000:]
        assert_same(dump(create_engine(server.url)), expected(read_export(folder)))


def test_a_pause_waits_at_its_stage_holding_what_it_is_given_until_told_to_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib
    import os
    import threading

    from kmdb.faults import pause

    held: list[str] = []

    @contextlib.contextmanager
    def holding() -> Iterator[None]:
        held.append("taken")
        yield
        held.append("freed")

    pause("import", holding)  # no stage asked for: at once, holding nothing
    assert held == []
    monkeypatch.setenv("KMDB_PAUSE_AT", "import")
    monkeypatch.setenv("KMDB_PAUSE_DIR", str(tmp_path))
    pause("scan", holding)  # another stage: at once
    waiting = threading.Thread(target=pause, args=("import", holding))
    waiting.start()
    reached = tmp_path / "import.reached"
    wait_for(reached.exists, timeout=30)
    wait_for(lambda: reached.read_text() == str(os.getpid()), timeout=30)
    assert waiting.is_alive() and held == ["taken"]
    (tmp_path / "import.go").touch()
    waiting.join(timeout=30)
    assert not waiting.is_alive() and held == ["taken", "freed"]
    pause("import", holding)  # once only: a job planned again after the stop runs through
    assert held == ["taken", "freed"]


def test_a_pause_ends_when_the_worker_is_asked_to_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from kmdb.faults import pause
    from kmdb.stop import STOP

    monkeypatch.setenv("KMDB_PAUSE_AT", "settle-after")
    monkeypatch.setenv("KMDB_PAUSE_DIR", str(tmp_path))
    waiting = threading.Thread(target=pause, args=("settle-after",))
    waiting.start()
    try:
        wait_for((tmp_path / "settle-after.reached").exists, timeout=30)
        STOP.set()
        waiting.join(timeout=30)
        assert not waiting.is_alive()
    finally:
        STOP.clear()
