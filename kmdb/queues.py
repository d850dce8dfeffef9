"""Redis and RQ: the connection, kmdb's queue, and kmdb's own keys."""

from __future__ import annotations

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.job import Job

from kmdb.errors import ConfigError
from kmdb.settings import Settings, mask_url


def connect(settings: Settings) -> Redis:
    """A Redis connection for KMDB_REDIS_URL that has been checked to answer."""
    try:
        redis = Redis.from_url(settings.redis_url, socket_connect_timeout=5)
        redis.ping()
    except (RedisError, ValueError) as exc:
        raise ConfigError(
            f"Cannot reach Redis at {mask_url(settings.redis_url)} ({exc}); "
            "check KMDB_REDIS_URL and that redis-server is running."
        ) from None
    return redis


def queue(settings: Settings, redis: Redis) -> Queue:
    """kmdb's RQ queue (named by KMDB_QUEUE)."""
    return Queue(settings.queue, connection=redis)


def key(settings: Settings, *parts: str) -> str:
    """A Redis key of kmdb's own, under kmdb:<queue>:."""
    return ":".join(("kmdb", settings.queue, *parts))


def clear(settings: Settings, redis: Redis) -> int:
    """Delete kmdb's jobs and keys (never FLUSHDB: the Redis may be shared); return jobs removed."""
    q = queue(settings, redis)
    registries = [
        q.started_job_registry,
        q.finished_job_registry,
        q.failed_job_registry,
        q.deferred_job_registry,
        q.scheduled_job_registry,
        q.canceled_job_registry,
    ]
    job_ids = set(q.get_job_ids())
    for registry in registries:
        job_ids.update(registry.get_job_ids())
    for job in Job.fetch_many(sorted(job_ids), connection=redis):
        if job is not None:
            # Every job is on the list, dependents too: delete them one by one.
            redis.delete(job.key, job.dependents_key, job.dependencies_key, f"rq:results:{job.id}")
    q.delete(delete_jobs=False)
    for registry in registries:
        redis.delete(registry.key)
    for own in redis.scan_iter(match=key(settings, "*")):
        redis.delete(own)
    return len(job_ids)
