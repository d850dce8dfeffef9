"""kmdb.orchestrate.liveness: a live job told from a dead worker's, and work no one will finish.

Recovery from every kind of stop, end to end, is in tests/test_recovery.py and
tests/test_fault_matrix.py.
"""

from __future__ import annotations

import datetime as dt
import time

from redis import Redis
from rq import Queue
from rq.job import Job
from sqlalchemy import Engine

from kmdb.load.database import create_schema
from kmdb.load.locks import SETTLE_LOCK, held
from kmdb.orchestrate.liveness import is_dead, kmdb_jobs, pending, survey, worker_alive
from kmdb.settings import Settings
from tests.helpers import REDIS_URL


def _noop() -> None:
    """A job function (never run here)."""


def _started_by(q: Queue, job: Job, worker: str, ago: dt.timedelta) -> None:
    """The job as a worker that started it `ago` left it."""
    q.connection.lrem(q.key, 0, job.id)
    job.set_status("started")
    job.started_at = dt.datetime.now(dt.UTC) - ago
    job.worker_name = worker
    job.save()
    q.connection.zadd(q.started_job_registry.key, {f"{job.id}:an-execution": time.time() + 3600})


def test_a_started_job_is_alive_while_its_lock_is_held_and_dead_once_it_is_free(
    mysql_url: str, redis_queue: str
) -> None:
    from kmdb.load.engine import make_engine

    engine = make_engine(Settings(database_url=mysql_url))
    q = Queue(redis_queue, connection=Redis.from_url(REDIS_URL))
    job = q.enqueue(_noop, meta={"kmdb": "settle"})
    _started_by(q, job, "a-worker-far-away", ago=dt.timedelta(minutes=1))
    with held(engine, SETTLE_LOCK):
        assert not is_dead(job, engine, q.connection)
    assert is_dead(job, engine, q.connection)
    engine.dispose()


def test_a_job_another_planner_purged_meanwhile_is_not_called_dead(
    mysql_url: str, redis_queue: str
) -> None:
    """Two burst workers may look at one dead job: the first purges it while the
    second looks again at its status, which must not fail the second."""
    from kmdb.load.engine import make_engine

    engine = make_engine(Settings(database_url=mysql_url))
    q = Queue(redis_queue, connection=Redis.from_url(REDIS_URL))
    job = q.enqueue(_noop, meta={"kmdb": "settle"})
    _started_by(q, job, "a-worker-far-away", ago=dt.timedelta(minutes=1))
    q.connection.delete(job.key)  # what the other planner's purge leaves: no hash at all
    assert not is_dead(job, engine, q.connection)
    engine.dispose()


def test_a_job_just_started_is_not_called_dead_before_it_could_take_its_lock(
    mysql_url: str, redis_queue: str
) -> None:
    from kmdb.load.engine import make_engine

    engine = make_engine(Settings(database_url=mysql_url))
    q = Queue(redis_queue, connection=Redis.from_url(REDIS_URL))
    job = q.enqueue(_noop, meta={"kmdb": "settle"})
    _started_by(q, job, "a-worker-far-away", ago=dt.timedelta(0))
    assert not is_dead(job, engine, q.connection)
    engine.dispose()


def test_on_sqlite_a_started_jobs_worker_is_looked_for_instead(
    sqlite_url: str, redis_queue: str
) -> None:
    from kmdb.load.engine import make_engine

    engine = make_engine(Settings(database_url=sqlite_url))
    redis = Redis.from_url(REDIS_URL)
    q = Queue(redis_queue, connection=redis)
    job = q.enqueue(_noop, meta={"kmdb": "settle"})
    _started_by(q, job, "a-worker-that-left-no-key", ago=dt.timedelta(minutes=1))
    assert not worker_alive(redis, "a-worker-that-left-no-key")
    assert not worker_alive(redis, None)
    assert is_dead(job, engine, redis)


def test_queued_jobs_are_pending_and_a_dead_workers_job_is_planned_again(
    engine: Engine, redis_queue: str
) -> None:
    create_schema(engine)
    settings = Settings(redis_url=REDIS_URL, queue=redis_queue)
    q = Queue(redis_queue, connection=Redis.from_url(REDIS_URL))
    queued = q.enqueue(_noop, meta={"kmdb": "scan", "revisions": [1]})
    assert {j.id for j in kmdb_jobs(q)} == {queued.id}
    assert pending(q, engine) == (1, 0)
    ghost = q.enqueue(_noop, meta={"kmdb": "scan", "revisions": [2]})
    _started_by(q, ghost, "a-worker-that-died", ago=dt.timedelta(minutes=1))
    found = survey(settings, q, engine)
    assert [j.id for j in found.dead] == [ghost.id]
    assert [j.id for j in found.active] == [queued.id]
    assert found.stuck == [] and found.stale_plan is None
