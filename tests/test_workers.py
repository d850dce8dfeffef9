"""kmdb.orchestrate.workers: RQ workers on kmdb's queue, and the real commands end to end
(S3 on moto's server, Redis, two workers, MariaDB).

It also tests kmdb.pipeline.leftovers (twelve lines), which a worker calls as it starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from sqlalchemy import create_engine

from kmdb.load import indexes
from kmdb.orchestrate.workers import KmdbWorker
from kmdb.sample import write_sample
from tests.helpers import (
    REDIS_URL,
    burst_workers,
    burst_workers_ok,
    kmdb_env,
    run,
    sample_bucket,
    upload_export,
    wait_for,
)
from tests.model import assert_same, dump, expected, read_export


def test_s3_export_with_two_workers_on_mariadb(
    mysql_url: str,
    redis_queue: str,
    s3_env: dict[str, str],
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "export"
    bucket = sample_bucket(
        folder, 12_000, seed=21, lines_per_revision=1_500, first_revision=140, prefix="dump/"
    )
    env = kmdb_env(
        cli_env,
        mysql_url,
        redis_queue,
        s3_env,
        KMDB_BATCH_SIZE="400",
        # Jobs of two revision files each (small files share jobs up to half a part).
        KMDB_PART_SIZE=str(4 * (folder / "revisions" / "140.json").stat().st_size),
    )
    run("kmdb-flush", env=env)

    first = run("kmdb-import", "--source", f"s3://{bucket}/dump", env=env)
    assert "Enqueued 8 revisions (140-147)" in first.stdout
    again = run("kmdb", "import", "--source", f"s3://{bucket}/dump", env=env)
    assert "Already queued or running: 8 revisions (140-147)" in again.stdout
    queue = Queue(redis_queue, connection=Redis.from_url(REDIS_URL))
    scans = [queue.fetch_job(i) for i in queue.get_job_ids()]
    assert [j.meta["revisions"] for j in scans if j] == [
        [140, 141],
        [142, 143],
        [144, 145],
        [146, 147],
    ]
    assert queue.count == 4  # nothing enqueued twice

    burst_workers_ok(2, env, tail=2000)
    assert queue.failed_job_registry.count == 0
    engine = create_engine(mysql_url)
    assert_same(dump(engine), expected(read_export(folder)))

    done = run("kmdb-import", "--source", f"s3://{bucket}/dump", env=env)
    assert "Nothing new to import" in done.stdout


def test_one_big_revision_is_imported_in_parts_by_two_workers(
    mysql_url: str,
    redis_queue: str,
    s3_env: dict[str, str],
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "export"
    bucket = sample_bucket(folder, 6_000, seed=5, lines_per_revision=6_000)
    size = (folder / "revisions" / "1.json").stat().st_size
    env = kmdb_env(
        cli_env,
        mysql_url,
        redis_queue,
        s3_env,
        KMDB_BATCH_SIZE="300",
        KMDB_PART_SIZE=str(size // 6 + 1),
    )
    run("kmdb-flush", env=env)
    run("kmdb-import", "--source", f"s3://{bucket}", env=env)
    queue = Queue(redis_queue, connection=Redis.from_url(REDIS_URL))
    burst_workers_ok(2, env, tail=2000)
    assert queue.failed_job_registry.count == 0
    finished = Job.fetch_many(
        queue.finished_job_registry.get_job_ids(), connection=queue.connection
    )
    parts = [j.meta["parts"] for j in finished if j and j.meta.get("kmdb") == "import"]
    assert sorted(parts) == [[[1, p]] for p in range(6)]  # read with ranged GETs, one job each
    assert_same(dump(create_engine(mysql_url)), expected(read_export(folder)))


def _missing_indexes(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return sum(len(found) for found in indexes.missing(conn).values())
    finally:
        engine.dispose()


def test_new_revisions_in_a_later_run_re_point_older_rows(
    mysql_url: str,
    redis_queue: str,
    s3_env: dict[str, str],
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 6_000, seed=4, lines_per_revision=1_000)
    later = {
        p.name: p.read_bytes() for p in (folder / "revisions").glob("*.json") if int(p.stem) > 3
    }
    for name in later:
        (folder / "revisions" / name).unlink()
    bucket = f"km-{uuid.uuid4().hex[:8]}"
    upload_export(folder, bucket)
    env = kmdb_env(cli_env, mysql_url, redis_queue, s3_env, AWS_BUCKET=bucket)
    run("kmdb-import", env=env)
    # Planned into empty tables: their indexes are built once, when the import ends.
    assert _missing_indexes(mysql_url) == 5
    assert "Indexes built when the import ends" in run("kmdb-status", env=env).stdout
    assert all(r.returncode == 0 for r in burst_workers(1, env))
    assert _missing_indexes(mysql_url) == 0
    assert "Indexes built" not in run("kmdb-status", env=env).stdout
    assert_same(dump(create_engine(mysql_url)), expected(read_export(folder)))

    for name, data in later.items():
        (folder / "revisions" / name).write_bytes(data)
    client = boto3.client("s3")
    for name, data in later.items():
        client.put_object(Bucket=bucket, Key=f"revisions/{name}", Body=data)
    second = run("kmdb-import", env=env)
    assert "Enqueued 3 revisions (4-6)" in second.stdout
    assert _missing_indexes(mysql_url) == 0  # the tables hold rows: indexes stay
    assert all(r.returncode == 0 for r in burst_workers(2, env))
    assert_same(dump(create_engine(mysql_url)), expected(read_export(folder)))


def test_a_worker_keeps_its_loaded_modules_out_of_the_collectors_sight() -> None:
    # The collector's full passes walked every loaded module's objects while an import
    # piled up rows (a third of its CPU time); warm_up freezes them before the first job.
    code = (
        "import gc; from kmdb.orchestrate.workers import warm_up; "
        "before = gc.get_freeze_count(); warm_up(); print(before, gc.get_freeze_count())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    before, after = int(out[0]), int(out[1])
    assert before == 0
    # SQLAlchemy, boto3, RQ and kmdb itself: far more than a few objects.
    assert after > 50_000


BEATS: list[int] = []  # the worker's key's time to live after each heartbeat


def job_that_waits_for_heartbeats(count: int) -> int:
    """A job that ends once its worker has renewed its heartbeat count times while it ran."""
    BEATS.clear()
    wait_for(lambda: len(BEATS) >= count, timeout=60, every=0.05, what=f"{count} heartbeats")
    return len(BEATS)


def test_a_worker_renews_its_heartbeat_while_a_long_job_runs(redis_queue: str) -> None:
    # Jobs run in the worker's own process: without the heartbeat thread its key would
    # only be renewed between jobs, and a long import would look like a dead worker.
    redis = Redis.from_url(REDIS_URL)
    q = Queue(redis_queue, connection=redis)
    job = q.enqueue(job_that_waits_for_heartbeats, 2)

    class Counting(KmdbWorker):
        def maintain_heartbeats(self, job, execution) -> None:  # noqa: ANN001
            super().maintain_heartbeats(job, execution)
            BEATS.append(int(redis.ttl(self.key)))

    worker = Counting([q], connection=redis, job_monitoring_interval=1)
    worker.work(burst=True)
    assert job.get_status(refresh=True) == "finished", job.latest_result()
    assert job.return_value() == 2
    # While the job ran, its worker's key was kept with a short time to live.
    assert all(0 < ttl <= worker.get_heartbeat_ttl(job) for ttl in BEATS)


def test_a_burst_worker_that_finds_no_job_quits_without_waiting_for_its_listener(
    redis_queue: str,
) -> None:
    # RQ's teardown sent UNSUBSCRIBE before stopping its pubsub thread: when the reply
    # woke the thread first, it went back to a 60 s wait and the join gave up only
    # after a second. Here the thread is made to see the reply before the stop every
    # time; stopped first, it is gone by the end of the teardown.
    redis = Redis.from_url(REDIS_URL)
    q = Queue(redis_queue, connection=redis)

    class ReplyFirst(KmdbWorker):
        def subscribe(self) -> None:
            super().subscribe()
            send = self.pubsub.unsubscribe

            def unsubscribe_then_let_the_reply_arrive(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
                sent = send(*args, **kwargs)
                # The listener has handled the reply once it is subscribed to nothing.
                wait_for(lambda: not self.pubsub.subscribed, timeout=30, every=0.001)
                return sent

            self.pubsub.unsubscribe = unsubscribe_then_let_the_reply_arrive

    for _ in range(3):
        worker = ReplyFirst([q], connection=redis)
        worker.work(burst=True)
        # Gone by the end of the teardown; left waiting, it would be alive a minute more.
        assert not worker.pubsub_thread.is_alive()


FAILED_ONCE = threading.Event()
SEEN_WAITING = threading.Event()
NEVER_SEEN = threading.Event()


def job_that_fails_until_seen_waiting() -> str:
    """A job whose attempts lose the database until the test has seen it wait to retry."""
    from kmdb.errors import DatabaseUnavailable
    from kmdb.orchestrate import jobs

    def attempt() -> str:
        if NEVER_SEEN.is_set():  # no more attempts: the test has failed already
            raise RuntimeError("the lock was never seen held while the job waited")
        if not SEEN_WAITING.is_set():
            FAILED_ONCE.set()
            raise DatabaseUnavailable("lost the database for a moment")
        return "done"

    # The jobs' own retry wrapper, as each job function runs its work in.
    return jobs._retrying(attempt)


def test_a_job_waiting_to_retry_keeps_its_lock_so_that_it_does_not_look_dead(
    mysql_url: str, redis_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Other workers call a started job dead when its first lock is free; the attempt
    # that failed let go of its locks, so the job holds its first one while it waits.
    # Its attempts fail until the lock is seen held: however slow the look, it looks
    # while the job waits, and a job that let go of the lock never ends.
    from kmdb.load.locks import SETTLE_LOCK, is_held

    monkeypatch.setenv("DATABASE_URL", mysql_url)
    monkeypatch.setenv("KMDB_OUTAGE_WAIT", "600")
    for event in (FAILED_ONCE, SEEN_WAITING, NEVER_SEEN):
        event.clear()
    engine = create_engine(mysql_url)
    redis = Redis.from_url(REDIS_URL)
    q = Queue(redis_queue, connection=redis)
    job = q.enqueue(job_that_fails_until_seen_waiting, meta={"kmdb": "settle"})

    def look_while_it_waits() -> None:
        try:
            assert FAILED_ONCE.wait(60)
            wait_for(lambda: is_held(engine, SETTLE_LOCK), timeout=60, every=0.05)
            SEEN_WAITING.set()
        finally:
            if not SEEN_WAITING.is_set():
                NEVER_SEEN.set()

    looking = threading.Thread(target=look_while_it_waits, daemon=True)
    looking.start()
    KmdbWorker([q], connection=redis).work(burst=True)
    looking.join(timeout=60)
    assert SEEN_WAITING.is_set()
    assert job.get_status(refresh=True) == "finished"
    assert job.return_value() == "done"
    assert is_held(engine, SETTLE_LOCK) is False
    engine.dispose()


def test_a_worker_removes_the_load_files_that_a_killed_one_left(
    mysql_url: str, redis_queue: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    # A worker killed in the middle of a chunk leaves that chunk's LOAD DATA files in
    # KMDB_TMP_DIR; the next worker to start removes those older than an hour.
    staging = tmp_path / "staging"
    staging.mkdir()
    left = staging / f"kmdb-properties-31337-{'c' * 32}.tsv"
    left.write_text("1\t2\n")
    long_ago = time.time() - 7200
    os.utime(left, (long_ago, long_ago))
    env = {
        **cli_env,
        "DATABASE_URL": mysql_url,
        "KMDB_QUEUE": redis_queue,
        "KMDB_TMP_DIR": str(staging),
    }
    run("kmdb-flush", env=env)
    run("kmdb-work", "--burst", env=env)
    assert not left.exists()


@pytest.fixture
def busy(redis_queue: str) -> tuple[Redis, Any]:
    """Redis and a queue of the test's own, where another worker runs a job that does not
    end while the test waits."""
    from kmdb.orchestrate.queues import queue
    from kmdb.settings import Settings

    redis = Redis.from_url(REDIS_URL)
    q = queue(Settings(redis_url=REDIS_URL, queue=redis_queue), redis)
    redis.zadd(q.started_job_registry.key, {f"{redis_queue}-busy:an-execution": time.time() + 60})
    return redis, q


def test_an_idle_burst_worker_looks_less_and_less_often_while_nothing_changes(
    busy: tuple[Redis, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rq.registry import StartedJobRegistry

    from kmdb.orchestrate import workers

    redis, q = busy
    looks: list[float] = []
    count = StartedJobRegistry.get_job_count

    def counted(self: StartedJobRegistry, *args: object, **kwargs: object) -> int:
        looks.append(time.monotonic())
        return count(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(StartedJobRegistry, "get_job_count", counted)
    started = time.monotonic()
    workers._wait_for_change(q)
    assert time.monotonic() - started >= workers.CHECK_EVERY
    # Every 50 ms would be 20 looks in the second (two Redis commands each); the pauses
    # double from 50 ms up to 400 ms.
    assert 2 <= len(looks) <= 7


def test_an_idle_burst_worker_wakes_when_a_job_is_queued_and_leaves_the_queue_as_it_was(
    busy: tuple[Redis, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from kmdb.orchestrate import workers

    redis, q = busy
    real_sleep = time.sleep

    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"slept {seconds} s instead of waiting on Redis")

    def release() -> None:
        real_sleep(0.2)
        redis.rpush(q.key, "a-job")

    # The queue is empty until the other thread pushes: the wait is Redis's, not a sleep.
    monkeypatch.setattr(workers.time, "sleep", no_sleep)
    releasing = threading.Thread(target=release)
    releasing.start()
    try:
        workers._wait_for_change(q)
    finally:
        releasing.join()
    assert redis.lrange(q.key, 0, -1) == [b"a-job"]


def test_on_a_redis_without_blmove_an_idle_worker_pauses_and_counts(redis_queue: str) -> None:
    import redis.exceptions

    from kmdb.orchestrate import workers
    from kmdb.orchestrate.queues import queue
    from kmdb.settings import Settings

    client = Redis.from_url(REDIS_URL)
    q = queue(Settings(redis_url=REDIS_URL, queue=redis_queue), client)
    asked: list[str] = []

    def old_redis(*args: object) -> None:
        asked.append("BLMOVE")
        raise redis.exceptions.ResponseError("unknown command 'BLMOVE'")

    client.blmove = old_redis  # type: ignore[method-assign]
    assert workers._queued_within(q, 0.01) is False
    client.rpush(q.key, "a-job")
    assert workers._queued_within(q, 0.01) is True
    assert asked == ["BLMOVE"]  # asked once, then known to be missing
