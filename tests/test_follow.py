"""kmdb.orchestrate.follow: `kmdb-import --wait`, following jobs until none is left."""

from __future__ import annotations

import pytest
from redis import Redis
from rq import Queue
from sqlalchemy import Engine

from kmdb.errors import NoProgress
from kmdb.load.database import create_schema
from kmdb.orchestrate.follow import follow, live_workers
from kmdb.settings import Settings
from tests.helpers import REDIS_URL


def _noop() -> None:
    """A job function (never run here)."""


def test_with_no_job_left_it_returns_at_once_with_no_failure(
    engine: Engine, redis_queue: str
) -> None:
    create_schema(engine)
    settings = Settings(redis_url=REDIS_URL, queue=redis_queue)
    assert follow(settings, Redis.from_url(REDIS_URL), engine, [1, 2]) == []


def test_jobs_that_no_worker_takes_are_one_sentence_once_the_wait_for_workers_is_over(
    engine: Engine, redis_queue: str
) -> None:
    create_schema(engine)
    settings = Settings(redis_url=REDIS_URL, queue=redis_queue, wait_for_workers=0)
    redis = Redis.from_url(REDIS_URL)
    Queue(redis_queue, connection=redis).enqueue(_noop, meta={"kmdb": "scan", "revisions": [1]})
    assert live_workers(settings, redis) == 0
    with pytest.raises(NoProgress) as stuck:
        follow(settings, redis, engine, [1])
    assert (stuck.value.jobs, stuck.value.queue) == (1, redis_queue)
    assert str(stuck.value) == (
        f"1 jobs wait on queue {redis_queue!r} and no worker runs them; start kmdb-work "
        "(or kmdb-pool), then run kmdb-import --wait again."
    )
