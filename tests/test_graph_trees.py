"""The join trees of a plan of many jobs: every job's Redis cost bounded, the guarantees kept.

RQ checks all of a job's dependencies each time one of them ends, so a job that
waits on every import costs the square of their number (kmdb.orchestrate.graph).
These tests read the graph back from Redis and fail if any job waits on, or is
waited on by, more jobs than the trees allow; and they run plans with trees
through real workers, dead ones included.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from sqlalchemy import Engine

from kmdb.load.database import create_schema
from kmdb.orchestrate import graph, liveness, queues
from kmdb.orchestrate.graph import Plan, enqueue_import, replan_dead
from kmdb.orchestrate.liveness import kmdb_jobs, pending
from kmdb.orchestrate.status import jobs_report
from kmdb.sample import write_sample
from kmdb.settings import Settings
from tests.helpers import NOTHING_LEFT, REDIS_URL, as_started_by_ghost, burst_workers_ok, queue_left
from tests.model import assert_same, dump, expected, read_export


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _plan(
    settings: Settings, engine: Engine, tmp_path: Path, lines: int = 3_000
) -> tuple[Path, Redis, Queue, Plan]:
    """A sample export of three revisions cut into many parts, planned."""
    create_schema(engine)
    folder = tmp_path / "export"
    write_sample(folder, lines, seed=5, lines_per_revision=lines // 3)
    sizes = {n: (folder / "revisions" / f"{n}.json").stat().st_size for n in (1, 2, 3)}
    redis = queues.connect(settings)
    plan = enqueue_import(settings, redis, engine, str(folder), [1, 2, 3], sizes)
    return folder, redis, queues.queue(settings, redis), plan


def _edges(redis: Redis, jobs: list[Job]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(dependencies, dependents) of each job, as RQ keeps them in Redis."""
    with redis.pipeline(transaction=False) as pipe:
        for job in jobs:
            pipe.smembers(job.dependencies_key)
            pipe.smembers(job.dependents_key)
        sets = pipe.execute()
    depends = {job.id: {_text(x) for x in sets[2 * i]} for i, job in enumerate(jobs)}
    dependents = {job.id: {_text(x) for x in sets[2 * i + 1]} for i, job in enumerate(jobs)}
    return depends, dependents


def _env(settings: Settings, cli_env: dict[str, str]) -> dict[str, str]:
    return {
        **cli_env,
        "DATABASE_URL": settings.database_url,
        "KMDB_QUEUE": settings.queue,
        "KMDB_TMP_DIR": settings.tmp_dir,
    }


def test_no_job_of_a_plan_of_many_parts_waits_on_or_releases_many_jobs(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    # About 200 import jobs: more than a tree's width both ways.
    settings = settings.replace(part_size=2_000)
    _folder, redis, q, plan = _plan(settings, engine, tmp_path)
    assert plan.parts > graph.FAN_OUT > graph.FAN_IN
    assert plan.joins > 0
    jobs = kmdb_jobs(q)
    assert len(jobs) == plan.scans + plan.parts + plan.joins + 3  # two settles, the re-point
    depends, dependents = _edges(redis, jobs)
    assert max(len(ids) for ids in depends.values()) <= graph.FAN_IN
    assert max(len(ids) for ids in dependents.values()) <= graph.FAN_OUT
    # Every arrow is both ways in Redis, and joins are no-ops that hold no lock.
    for job_id, ids in depends.items():
        assert all(job_id in dependents[other] for other in ids)
    joins = [j for j in jobs if j.meta["kmdb"] == "join"]
    assert len(joins) == plan.joins
    assert all(j.func_name == graph.JOIN_JOB for j in joins)
    assert all(liveness.lock_of(j) is None for j in joins)
    # The settle after the import still waits on every import, and every import on
    # the settle before it, through the trees.
    by_kind = {j.id: j.meta["kmdb"] for j in jobs}
    settle_after = plan.settle
    assert settle_after is not None

    def above(job_id: str) -> set[str]:
        seen, todo = set(), [job_id]
        while todo:
            for other in depends[todo.pop()]:
                if other not in seen:
                    seen.add(other)
                    todo.append(other)
        return seen

    behind_settle = above(settle_after.id)
    assert {i for i, kind in by_kind.items() if kind in ("import", "scan")} <= behind_settle
    before = next(j.id for j in jobs if j.meta.get("before"))
    assert all(before in above(i) for i, kind in by_kind.items() if kind == "import")


def test_the_status_counts_no_join(settings: Settings, engine: Engine, tmp_path: Path) -> None:
    settings = settings.replace(part_size=2_000)
    _folder, redis, q, plan = _plan(settings, engine, tmp_path)
    report = jobs_report(settings, redis, engine)
    assert (
        report["queued"] + report["deferred"] == plan.scans + plan.parts + 3
    )  # two settles, the re-point
    assert report["dead"] == [] and report["failed"] == 0


def test_looking_for_dead_workers_reads_few_jobs_however_many_wait(
    settings: Settings, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Burst workers and kmdb-import --wait look each time their queue runs empty, and
    # every second: a look must not read every job of a plan of thousands.
    settings = settings.replace(part_size=2_000)
    _folder, redis, q, plan = _plan(settings, engine, tmp_path)
    read: list[int] = []
    fetch_many = Job.fetch_many

    def counting(job_ids, *args, **kwargs):  # type: ignore[no-untyped-def]
        read.append(len(list(job_ids)))
        return fetch_many(job_ids, *args, **kwargs)

    monkeypatch.setattr(Job, "fetch_many", counting)
    assert replan_dead(settings, redis, engine) is None
    waiting, started = pending(q, engine)
    assert started == 0 and waiting >= plan.scans
    assert sum(read) <= 2


def _tree_plan(
    settings: Settings, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Redis, Queue, Plan]:
    """A plan of about 20 import jobs with trees three wide (planned in this process)."""
    monkeypatch.setattr(graph, "FAN_IN", 3)
    monkeypatch.setattr(graph, "FAN_OUT", 3)
    settings = settings.replace(part_size=20_000)
    found = _plan(settings, engine, tmp_path, lines=1_500)
    assert found[3].joins >= 6 and found[3].parts >= 9
    return found


def test_a_plan_with_join_trees_imports_what_the_contract_says(
    settings: Settings,
    engine: Engine,
    cli_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not settings.database_url.startswith("mysql"):
        pytest.skip("once, on MariaDB")
    folder, redis, q, plan = _tree_plan(settings, engine, tmp_path, monkeypatch)
    burst_workers_ok(2, _env(settings, cli_env))
    assert queue_left(q) == NOTHING_LEFT
    assert q.failed_job_registry.get_job_count(cleanup=False) == 0
    finished = q.finished_job_registry.get_job_ids()
    assert len(finished) == plan.scans + plan.parts + plan.joins + 3  # two settles, the re-point
    assert_same(dump(engine), expected(read_export(folder)))


def _as_finished(q: Queue, job: Job) -> None:
    q.connection.lrem(q.key, 0, job.id)
    q.connection.zrem(q.deferred_job_registry.key, job.id)
    job.set_status("finished")
    q.connection.zadd(q.finished_job_registry.key, {job.id: time.time() + 3600})


@pytest.mark.parametrize("kind", ["join", "import"])
def test_a_join_or_an_import_whose_worker_died_is_planned_again(
    kind: str,
    settings: Settings,
    engine: Engine,
    cli_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder, redis, q, _plan_ = _tree_plan(settings, engine, tmp_path, monkeypatch)
    jobs = kmdb_jobs(q)
    depends, _dependents = _edges(redis, jobs)
    # The scans and the settle before the import ran; then a worker died in the tree
    # that releases the imports.
    for job in jobs:
        if job.meta["kmdb"] == "scan" or job.meta.get("before"):
            _as_finished(q, job)
    settled = {j.id for j in jobs if j.meta.get("before")}
    if kind == "join":
        ghost = next(j for j in jobs if j.meta["kmdb"] == "join" and depends[j.id] <= settled)
    else:
        ghost = next(j for j in jobs if j.meta["kmdb"] == "import")
    as_started_by_ghost(q, ghost)

    plan = replan_dead(settings, redis, engine)
    assert plan is not None and plan.dead == [ghost.id]
    assert plan.enqueued == [1, 2, 3]
    burst_workers_ok(1, _env(settings, cli_env))
    assert queue_left(q) == NOTHING_LEFT
    assert_same(dump(engine), expected(read_export(folder)))


def test_jobs_released_by_two_workers_at_once_are_all_queued_once(redis_queue: str) -> None:
    # RQ's own move from the ready registry gave up on a job whenever another worker
    # changed the registry meanwhile, and left it there for ten minutes.
    import threading

    from rq.job import JobStatus

    redis = Redis.from_url(REDIS_URL)
    q = queues.KmdbQueue(redis_queue, connection=redis)
    ids = []
    for i in range(200):
        job = q.create_job(graph.JOIN_JOB, job_id=f"{redis_queue}-join-t-{i}")
        job.origin = q.name
        job.set_status(JobStatus.READY_TO_ENQUEUE)
        job.save()
        redis.zadd(q.ready_job_registry.key, {job.id: time.time()})
        ids.append(job.id)
    halves = [ids[::2] + ids[1::2], ids[1::2] + ids[::2]]
    threads = [
        threading.Thread(
            target=queues.KmdbQueue(
                redis_queue, connection=Redis.from_url(REDIS_URL)
            ).enqueue_ready,
            args=(half,),
        )
        for half in halves
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(q.get_job_ids()) == sorted(ids)
    assert q.ready_job_registry.get_job_count(cleanup=False) == 0
    assert {j.get_status() for j in Job.fetch_many(ids, connection=redis) if j} == {"queued"}
