"""A worker's life: stops on request, outages of Redis and the database, and what status shows."""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError

from kmdb.errors import Stopped
from kmdb.extract.local import LocalSource
from kmdb.orchestrate.workers import KmdbWorker
from kmdb.pipeline.scan_pass import scan_revisions
from kmdb.sample import write_sample
from kmdb.settings import Settings
from kmdb.stop import STOP
from tests.helpers import (
    BIN,
    REDIS_URL,
    PrivateRedis,
    burst_workers_ok,
    enqueue_sample,
    free_port,
    kmdb_env,
    lines_imported,
    run,
    running_mariadb,
    start_logged,
    wait_for,
)
from tests.model import assert_same, dump, expected, read_export


@pytest.fixture
def stop_flag() -> Iterator[None]:
    """STOP is the process's own: cleared before and after, so no other test sees it set."""
    STOP.clear()
    yield
    STOP.clear()


def stopping_job() -> None:
    """A job that is asked to stop mid-way, as a worker's SIGTERM does."""
    raise Stopped(3, 7)


def test_a_stopped_job_goes_back_to_the_queue_and_is_no_failure(
    redis_queue: str, stop_flag: None, caplog: pytest.LogCaptureFixture
) -> None:
    redis = Redis.from_url(REDIS_URL)
    q = Queue(redis_queue, connection=redis)
    job = q.enqueue(stopping_job)
    after = q.enqueue(len, [], depends_on=job)
    worker = KmdbWorker([q], connection=redis)
    with caplog.at_level(logging.INFO):
        worker.work(burst=True, max_jobs=1)
    assert worker.failed_job_count == 0
    assert worker.stopped_jobs == [job.id]
    assert q.failed_job_registry.count == 0
    assert q.started_job_registry.count == 0
    # Back at the front of the queue, its dependent still waiting on it: the graph is whole.
    assert q.get_job_ids() == [job.id]
    assert job.get_status(refresh=True) == "queued"
    assert after.get_status(refresh=True) == "deferred"
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert said == [
        f"Stopped on request after line 7 of revision 3. Job {job.id} is queued again; "
        "the next worker goes on from there."
    ]
    assert "Traceback" not in caplog.text


def test_a_scan_stopped_on_request_marks_its_revision_stopped(
    sqlite_url: str, tmp_path: Path, stop_flag: None
) -> None:
    from kmdb.load.database import create_schema
    from kmdb.load.engine import make_engine
    from kmdb.pipeline.inline import import_inline

    folder = tmp_path / "export"
    write_sample(folder, 3_000, seed=4, lines_per_revision=3_000)
    settings = Settings(database_url=sqlite_url, batch_size=5, tmp_dir=str(tmp_path / "tmp"))
    engine = make_engine(settings)
    create_schema(engine)
    source = LocalSource(str(folder))
    STOP.set()
    with pytest.raises(Stopped):
        scan_revisions(engine, source, [1], settings)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT status, error, scanned FROM revisions")).one()
    assert tuple(row) == ("stopped", None, False)
    STOP.clear()
    import_inline(engine, source, settings, [1])
    assert_same(dump(engine), expected(read_export(folder)))


def _jobs_line(status: str) -> str:
    return next(line for line in status.splitlines() if line.startswith("Jobs on queue"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_worker_stopped_mid_import_says_where_exits_0_and_the_next_one_goes_on(
    sig: signal.Signals,
    mysql_url: str,
    redis_queue: str,
    s3_env: dict[str, str],
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "export"
    # Small chunks: the part runs long enough to be stopped.
    env = kmdb_env(cli_env, mysql_url, redis_queue, s3_env, KMDB_BATCH_SIZE="100")
    _, env = enqueue_sample(folder, env, 30_000, seed=31, lines_per_revision=30_000)
    log = tmp_path / "worker.log"
    worker = start_logged("kmdb-work", "--burst", env=env, log=log)
    try:
        wait_for(lambda: lines_imported(mysql_url) >= 1_000, every=0.05, shown=log)
        worker.send_signal(sig)
        worker.wait(timeout=120)
    finally:
        if worker.poll() is None:
            worker.kill()
    said = log.read_text()
    assert worker.returncode == 0, said[-3000:]
    assert "Traceback" not in said and "failed" not in said, said[-3000:]
    assert said.count("Stopped on request after line ") == 1, said[-3000:]
    status = run("kmdb-status", env=env).stdout
    assert "0 failed, 1 stopped" in status, status
    assert "Rate:" not in status and "ETA" not in status, status
    assert "1 queued" in _jobs_line(status) and "0 failed" in _jobs_line(status), status
    # The stopped job waits at the front of the queue: kmdb-import has nothing to add,
    # and the next worker goes on from the last commit.
    assert "Already queued or running: 1 revisions (1)" in run("kmdb-import", env=env).stdout
    burst_workers_ok(1, env)
    assert_same(dump(create_engine(mysql_url)), expected(read_export(folder)))
    status = run("kmdb-status", env=env).stdout
    assert "1 known, 1 imported, 0 in progress, 0 failed, 0 stopped" in status, status


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_inline_import_stopped_says_where_exits_0_and_a_rerun_goes_on(
    sig: signal.Signals, mysql_url: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 30_000, seed=32, lines_per_revision=30_000)
    env = {**cli_env, "DATABASE_URL": mysql_url, "KMDB_BATCH_SIZE": "100"}
    proc = subprocess.Popen(
        [str(BIN / "kmdb-import"), "--inline", "--source", str(folder)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: _lines_so_far(mysql_url) >= 1_000, every=0.05)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert out.startswith("Stopped on request after line "), out
    assert out.rstrip().endswith("Run kmdb-import again to go on from there."), out
    engine = create_engine(mysql_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM revisions")).scalar_one() == "stopped"
    run("kmdb-import", "--inline", "--source", str(folder), env=env)
    assert_same(dump(engine), expected(read_export(folder)))


def _lines_so_far(url: str) -> int:
    """Lines committed by running parts; 0 while the import has not made its tables yet."""
    try:
        return lines_imported(url)
    except ProgrammingError:
        return 0


def _said(logs: list[Path], what: str) -> int:
    """How many times the workers' logs say what (a retry each: an outage that lasts)."""
    return sum(log.read_text().count(what) for log in logs)


def _stop(worker: subprocess.Popen) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_workers_ride_out_a_redis_outage_mid_import(
    mysql_url: str, s3_env: dict[str, str], cli_env: dict[str, str], tmp_path: Path
) -> None:
    # It writes every change to disk: killed and started again, it comes back with its
    # queue, as a restarted production Redis does.
    server = PrivateRedis(tmp_path / "redis", "--appendonly", "yes", "--appendfsync", "always")
    server.start()
    folder = tmp_path / "export"
    env = kmdb_env(
        cli_env,
        mysql_url,
        None,
        s3_env,
        KMDB_REDIS_URL=server.url,
        KMDB_BATCH_SIZE="100",
        KMDB_WORKERS="2",
    )
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    workers: list[subprocess.Popen] = []
    try:
        _, env = enqueue_sample(folder, env, 60_000, seed=33, lines_per_revision=15_000)
        # Two burst workers and a plain one (as kmdb-pool runs): none may quit on the outage.
        for i, log in enumerate(logs):
            args = ["--burst"] if i < 2 else []
            workers.append(start_logged("kmdb-work", *args, env=env, log=log))
        wait_for(lambda: lines_imported(mysql_url) >= 1_000, every=0.05, shown=logs[0])
        server.kill()

        # Jobs end meanwhile: their workers wait to record it, the idle ones to dequeue.
        # Down until they have tried again and again, backing off.
        wait_for(lambda: _said(logs, "Redis does not answer") >= 6, timeout=60, shown=logs[0])
        assert all(w.poll() is None for w in workers), [log.read_text()[-2000:] for log in logs]
        server.start()
        for w, log in zip(workers[:2], logs, strict=False):
            w.wait(timeout=300)
            assert w.returncode == 0, log.read_text()[-3000:]
        assert workers[2].poll() is None, logs[2].read_text()[-3000:]
        _stop(workers[2])
        assert workers[2].returncode == 0, logs[2].read_text()[-3000:]
        said = "".join(log.read_text() for log in logs)
        assert "unhandled exception" not in said and "Traceback" not in said, said[-5000:]
        assert Queue("kmdb", connection=Redis.from_url(server.url)).failed_job_registry.count == 0
        assert_same(dump(create_engine(mysql_url)), expected(read_export(folder)))
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
        server.stop()


def test_workers_wait_for_a_database_that_is_down_when_they_start(
    redis_queue: str, s3_env: dict[str, str], cli_env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    with running_mariadb(tmp_path / "mariadb") as server:
        env = kmdb_env(cli_env, server.url, redis_queue, s3_env, KMDB_WORKERS="2")
        logs = [tmp_path / "burst.log", tmp_path / "plain.log"]
        workers: list[subprocess.Popen] = []
        try:
            _, env = enqueue_sample(folder, env, 8_000, seed=34, lines_per_revision=2_000)
            server.kill()
            # A burst worker needs the database before its first job; a plain one at its
            # first job (kmdb.orchestrate.jobs._retrying). Both wait for it instead of failing.
            for log, args in zip(logs, [["--burst"], []], strict=True):
                workers.append(start_logged("kmdb-work", *args, env=env, log=log))

            def waiting() -> bool:
                # Each has tried twice at least, backing off: an outage that lasts.
                burst, plain = ([log] for log in logs)
                return (
                    _said(burst, "Waiting for the database") >= 2
                    and _said(plain, "Lost the database") >= 2
                )

            wait_for(waiting, timeout=60, shown=logs[1])
            server.start()
            workers[0].wait(timeout=300)
            assert workers[0].returncode == 0, logs[0].read_text()[-3000:]
            q = Queue(redis_queue, connection=Redis.from_url(REDIS_URL))
            wait_for(lambda: not q.count and not q.started_job_registry.count, timeout=120)
            _stop(workers[1])
            assert workers[1].returncode == 0, logs[1].read_text()[-3000:]
            assert q.failed_job_registry.count == 0, [log.read_text()[-3000:] for log in logs]
            assert_same(dump(create_engine(server.url)), expected(read_export(folder)))
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()


def test_a_pool_stopped_by_sigterm_says_where_each_worker_stopped_and_they_exit_0(
    mysql_url: str, redis_queue: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 60_000, seed=35, lines_per_revision=30_000)
    env = kmdb_env(cli_env, mysql_url, redis_queue, KMDB_BATCH_SIZE="200", KMDB_WORKERS="2")
    run("kmdb-flush", env=env)
    run("kmdb-import", "--source", str(folder), env=env)
    log = tmp_path / "pool.log"
    # No Procfile in the test's folder: kmdb's own.
    pool = start_logged("kmdb-pool", "-n", "2", env=env, log=log)
    try:
        wait_for(lambda: lines_imported(mysql_url) >= 2_000, every=0.05, shown=log)
        pool.send_signal(signal.SIGTERM)
        pool.wait(timeout=120)
    finally:
        if pool.poll() is None:
            pool.kill()
    said = log.read_text()
    assert "Traceback" not in said and "jobs failed" not in said, said[-3000:]
    assert said.count("Stopped on request after line ") >= 1, said[-3000:]
    # Each worker process is the Procfile's own (exec): honcho sees it leave cleanly.
    assert said.count("stopped (rc=0)") == 2, said[-3000:]
    burst_workers_ok(2, env)
    assert_same(dump(create_engine(mysql_url)), expected(read_export(folder)))


def test_an_outage_longer_than_the_wait_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch, cli_env: dict[str, str]
) -> None:
    from kmdb.errors import DatabaseUnavailable, RedisUnavailable
    from kmdb.orchestrate import jobs
    from kmdb.orchestrate.workers import riding_out_redis

    nowhere = Redis(port=free_port(), socket_connect_timeout=1)
    with pytest.raises(RedisUnavailable) as caught:
        riding_out_redis(nowhere.ping, "testing", wait=1)
    assert str(caught.value).startswith("Redis did not answer for 1 s while testing (")
    assert caught.value.doing == "testing"
    # KMDB_OUTAGE_WAIT bounds a job's wait for the database too: with none, it fails at once.
    monkeypatch.setenv("KMDB_OUTAGE_WAIT", "0")
    monkeypatch.setenv("DATABASE_URL", f"mysql+pymysql://root@127.0.0.1:{free_port()}/kmdb")
    with pytest.raises(DatabaseUnavailable):
        jobs.settle_job()
    bad = run("kmdb-work", "--burst", env={**cli_env, "KMDB_OUTAGE_WAIT": "soon"}, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "Error: KMDB_OUTAGE_WAIT must be a whole number of at least 0, e.g. "
        "KMDB_OUTAGE_WAIT=300; it is 'soon'."
    )
