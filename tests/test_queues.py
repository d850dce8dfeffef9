"""kmdb.orchestrate.queues: the Redis connection, kmdb's queue, and clearing what kmdb left there."""

from __future__ import annotations

import pytest
from redis import Redis
from rq import Queue

from kmdb.errors import ConfigError
from kmdb.orchestrate import queues
from kmdb.settings import Settings
from tests.helpers import REDIS_URL, free_port


def _noop() -> None:
    """A job function (never run here)."""


def test_an_unreachable_redis_is_one_sentence_with_its_password_masked() -> None:
    url = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"
    with pytest.raises(ConfigError) as refused:
        queues.connect(Settings(redis_url=url))
    said = str(refused.value)
    assert said.startswith(f"Cannot reach Redis at redis://:***@127.0.0.1:{url.rsplit(':', 1)[1]}")
    assert said.endswith("check KMDB_REDIS_URL and that redis-server is running.")
    assert "s3cret-pw" not in said


def test_clearing_removes_kmdbs_jobs_and_keys_of_this_queue_only(redis_queue: str) -> None:
    settings = Settings(redis_url=REDIS_URL, queue=redis_queue)
    other = Settings(redis_url=REDIS_URL, queue=f"{redis_queue}-other")
    redis = queues.connect(settings)
    q = queues.queue(settings, redis)
    first = q.enqueue(_noop, job_id=f"{redis_queue}-scan-1")
    q.enqueue(_noop, job_id=f"{redis_queue}-import-1-0", depends_on=first)
    redis.set(queues.key(settings, "plan"), b"x")
    theirs = Queue(other.queue, connection=redis)
    kept = theirs.enqueue(_noop, job_id=f"{other.queue}-scan-1")
    redis.set(queues.key(other, "plan"), b"y")
    try:
        assert queues.clear(settings, redis) == 2
        assert q.count == 0 and q.deferred_job_registry.count == 0
        assert not redis.exists(f"rq:job:{redis_queue}-scan-1", queues.key(settings, "plan"))
        assert theirs.count == 1 and redis.exists(kept.key, queues.key(other, "plan")) == 2
        assert queues.clear(settings, redis) == 0
    finally:
        queues.clear(other, redis)


def test_purging_a_job_removes_it_from_its_queue_and_every_registry(redis_queue: str) -> None:
    settings = Settings(redis_url=REDIS_URL, queue=redis_queue)
    redis = queues.connect(settings)
    q = queues.queue(settings, redis)
    job = q.enqueue(_noop, job_id=f"{redis_queue}-settle-x")
    redis.zadd(q.started_job_registry.key, {f"{job.id}:an-execution": 1})
    queues.purge(q, job.id)
    assert q.count == 0
    assert redis.zrange(q.started_job_registry.key, 0, -1) == []
    assert not redis.exists(job.key)
    queues.purge(q, job.id)  # nothing left: no harm


def test_a_redis_kmdb_may_write_in_passes_the_check(redis_queue: str) -> None:
    settings = Settings(redis_url=REDIS_URL, queue=redis_queue)
    redis = Redis.from_url(REDIS_URL)
    queues.check_redis(settings, redis)
    assert list(redis.scan_iter(match=queues.key(settings, "*"))) == []
