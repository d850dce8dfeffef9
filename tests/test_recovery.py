"""Recovering the RQ job graph from what stops leave behind, on the real Redis and databases.

The states are made by hand where a real stop would need luck to hit them (a
dead worker's started job, an expired execution, a half-deleted job hash); the
fault matrix (test_fault_matrix.py) makes them with real processes.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from sqlalchemy import Engine

from kmdb.errors import NoProgress
from kmdb.load.database import create_schema
from kmdb.orchestrate import queues
from kmdb.orchestrate.follow import follow
from kmdb.orchestrate.graph import enqueue_import, replan_dead
from kmdb.orchestrate.liveness import kmdb_jobs, survey
from kmdb.sample import write_sample
from kmdb.settings import Settings
from tests.helpers import NOTHING_LEFT, as_started_by_ghost, burst_workers_ok, queue_left
from tests.model import assert_same, dump, expected, read_export


def _export(tmp_path: Path, engine: Engine) -> tuple[Path, dict[int, int]]:
    create_schema(engine)
    folder = tmp_path / "export"
    write_sample(folder, 3_000, seed=21, lines_per_revision=1_000)
    files = sorted((folder / "revisions").glob("*.json"), key=lambda p: int(p.stem))
    return folder, {int(p.stem): p.stat().st_size for p in files}


def _enqueued(
    settings: Settings, engine: Engine, tmp_path: Path
) -> tuple[Path, dict[int, int], Redis, Queue]:
    """A sample export with its import planned: its folder, file sizes, Redis and queue."""
    folder, sizes = _export(tmp_path, engine)
    redis = queues.connect(settings)
    q = queues.queue(settings, redis)
    enqueue_import(settings, redis, engine, str(folder), sorted(sizes), sizes)
    return folder, sizes, redis, q


def _run_all(
    settings: Settings, cli_env: dict[str, str], q: Queue, engine: Engine, folder: Path
) -> None:
    """A burst worker does what is planned, leaves nothing in the queue, and the rows are
    the model's."""
    burst_workers_ok(1, _env(settings, cli_env))
    assert queue_left(q) == NOTHING_LEFT
    assert_same(dump(engine), expected(read_export(folder)))


def _env(settings: Settings, cli_env: dict[str, str]) -> dict[str, str]:
    return {
        **cli_env,
        "DATABASE_URL": settings.database_url,
        "KMDB_QUEUE": settings.queue,
        "KMDB_TMP_DIR": settings.tmp_dir,
    }


def _by_kind(q: Queue) -> dict[str, list[Job]]:
    found: dict[str, list[Job]] = {}
    for job in kmdb_jobs(q):
        kind = job.meta["kmdb"]
        if kind == "settle" and job.meta.get("repoint"):
            kind = "repoint"
        elif kind == "settle":
            kind += "-before" if job.meta.get("before") else "-after"
        found.setdefault(kind, []).append(job)
    return found


def _as_finished(q: Queue, job: Job) -> None:
    q.connection.lrem(q.key, 0, job.id)
    q.connection.zrem(q.deferred_job_registry.key, job.id)
    job.set_status("finished")
    q.connection.zadd(q.finished_job_registry.key, {job.id: time.time() + 3600})


def test_a_settle_killed_before_the_import_is_planned_again_with_the_jobs_source(
    settings: Settings, engine: Engine, cli_env: dict[str, str], tmp_path: Path
) -> None:
    folder, sizes, redis, q = _enqueued(settings, engine, tmp_path)
    jobs = _by_kind(q)
    for scan in jobs["scan"]:
        _as_finished(q, scan)
    as_started_by_ghost(q, jobs["settle-before"][0])

    plan = replan_dead(settings, redis, engine)
    assert plan is not None and plan.dead == [jobs["settle-before"][0].id]
    # The dead settle's only argument is True: the source comes from the jobs' meta.
    imports = _by_kind(q)["import"]
    assert imports and all(j.args[0] == str(folder) for j in imports)
    assert all(j.meta["source"] == str(folder) for j in kmdb_jobs(q))

    _run_all(settings, cli_env, q, engine, folder)
    assert q.failed_job_registry.get_job_count(cleanup=False) == 0


def test_enqueueing_goes_over_whatever_old_jobs_left_and_clearing_removes_it_all(
    settings: Settings, engine: Engine, cli_env: dict[str, str], tmp_path: Path
) -> None:
    folder, sizes, redis, q = _enqueued(settings, engine, tmp_path)
    ids = [j.id for j in kmdb_jobs(q) if j.meta["kmdb"] in ("scan", "import")]
    queues.clear(settings, redis)
    # What a dead worker and RQ's later clean-up leave: a failed job whose execution
    # expired while the job still lists it (RQ's Job.delete then raises ValueError) ...
    old = Job.create(
        "kmdb.orchestrate.jobs.settle_job", connection=redis, id=ids[0], origin=settings.queue
    )
    old.meta = {"kmdb": "scan", "revisions": [1]}
    old.save()
    old.set_status("failed")
    redis.zadd(q.failed_job_registry.key, {old.id: time.time() + 3600})
    redis.zadd(f"rq:executions:{old.id}", {"expired-execution": time.time() + 3600})
    # ... and a half-deleted job in no registry.
    redis.hset(f"rq:job:{ids[-1]}", "status", "started")

    plan = enqueue_import(settings, redis, engine, str(folder), sorted(sizes), sizes)
    assert plan.enqueued == sorted(sizes)
    burst_workers_ok(1, _env(settings, cli_env))
    assert_same(dump(engine), expected(read_export(folder)))

    # Orphans of the queue's own: a job hash and an executions list in no registry.
    redis.hset(f"rq:job:{settings.queue}-import-9-0", "status", "queued")
    redis.zadd(f"rq:executions:{settings.queue}-settle-after-0123", {"x": 1})
    other = Job.create(
        "kmdb.orchestrate.jobs.settle_job", connection=redis, id="not-kmdbs", origin="other"
    )
    other.save()
    try:
        queues.clear(settings, redis)
        left = [k.decode() for k in redis.scan_iter(match="*", count=1000)]
        assert [k for k in left if settings.queue in k] == []
        assert redis.exists(other.key)  # another queue's job stays
    finally:
        redis.delete(other.key)


def test_a_job_that_rq_moved_to_failed_for_its_dead_worker_is_planned_again(
    settings: Settings, engine: Engine, cli_env: dict[str, str], tmp_path: Path
) -> None:
    folder, sizes, redis, q = _enqueued(settings, engine, tmp_path)
    jobs = _by_kind(q)
    # Scans, settle and imports run by hand up to the imports, as workers would.
    for scan in jobs["scan"]:
        as_started_by_ghost(q, scan, expires=-1)
    # What another worker's clean-up does minutes after the kill (on SQLite, where no
    # lock tells, before kmdb looks): the scan moves to failed as abandoned.
    q.started_job_registry.cleanup()
    assert q.failed_job_registry.get_job_count(cleanup=False) == len(jobs["scan"])

    found = survey(settings, q, engine)
    assert sorted(j.id for j in found.dead) == sorted(j.id for j in jobs["scan"])
    _run_all(settings, cli_env, q, engine, folder)
    # It did not fail: its work was planned again, and done.
    assert q.failed_job_registry.get_job_count(cleanup=False) == 0


def test_jobs_waiting_on_jobs_that_will_never_end_are_planned_again(
    settings: Settings, engine: Engine, cli_env: dict[str, str], tmp_path: Path
) -> None:
    folder, sizes, redis, q = _enqueued(settings, engine, tmp_path)
    jobs = _by_kind(q)
    # A stop after the settle before the import, whose imports were then lost: the
    # settle after the import waits on jobs that no longer exist.
    for scan in jobs["scan"]:
        _as_finished(q, scan)
    _as_finished(q, jobs["settle-before"][0])
    _as_finished(q, jobs["repoint"][0])
    for job in jobs["import"]:
        redis.delete(job.key)
        redis.zrem(q.deferred_job_registry.key, job.id)

    plan = enqueue_import(settings, redis, engine, str(folder), sorted(sizes), sizes)
    assert plan.stuck == [jobs["settle-after"][0].id]
    # kmdb-import --wait with no worker: it says so instead of waiting for ever.
    with pytest.raises(NoProgress, match="no worker runs them; start kmdb-work"):
        _follow_impatiently(settings, redis, engine)
    _run_all(settings, cli_env, q, engine, folder)
    assert follow(settings, redis, engine, []) == []


def _follow_impatiently(settings: Settings, redis: Redis, engine: Engine) -> None:
    follow(settings.replace(wait_for_workers=1), redis, engine, [])


def test_a_plan_whose_planner_died_half_way_is_planned_again(
    settings: Settings, engine: Engine, cli_env: dict[str, str], tmp_path: Path
) -> None:
    import json
    import socket
    import subprocess

    folder, sizes, redis, q = _enqueued(settings, engine, tmp_path)
    jobs = _by_kind(q)
    # The planner died after the settle before the import: no imports, no settle after.
    for job in jobs["import"] + jobs["settle-after"]:
        redis.delete(job.key)
        redis.zrem(q.deferred_job_registry.key, job.id)
    dead_pid = subprocess.Popen(["true"])
    dead_pid.wait()
    mark = {
        "token": jobs["scan"][0].meta["plan"],
        "host": socket.gethostname(),
        "pid": dead_pid.pid,
        "at": time.time(),
        "revisions": sorted(sizes),
        "source": str(folder),
    }
    redis.set(queues.key(settings, "planning"), json.dumps(mark))

    _run_all(settings, cli_env, q, engine, folder)
    assert not redis.exists(queues.key(settings, "planning"))
