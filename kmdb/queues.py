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
            job.delete(remove_from_queue=False, delete_dependents=True)
    q.delete(delete_jobs=False)
    for registry in registries:
        redis.delete(registry.key)
    for own in redis.scan_iter(match=key(settings, "*")):
        redis.delete(own)
    return len(job_ids)


# Jobs may run for hours on a large revision; RQ's default of 180 s would kill them.
JOB_TIMEOUT = 24 * 3600
ACTIVE = ("queued", "started", "deferred", "scheduled")


def revision_job_id(settings: Settings, revision: int) -> str:
    """One job id per revision, so that enqueueing twice is noticed."""
    return f"{settings.queue}-revision-{revision}"


def enqueue_import(
    settings: Settings, redis: Redis, source: str, revisions: list[int]
) -> tuple[list[int], list[int], Job | None]:
    """Enqueue revision jobs not already waiting or running, then the settle step after them.

    Returns (enqueued, already active, the settle job or None).
    """
    from rq.job import Dependency

    from kmdb import jobs

    q = queue(settings, redis)
    enqueued: list[int] = []
    active: list[int] = []
    new_jobs: list[Job] = []
    for revision in revisions:
        job_id = revision_job_id(settings, revision)
        old = q.fetch_job(job_id)
        if old is not None:
            if old.get_status(refresh=True) in ACTIVE:
                active.append(revision)
                continue
            old.delete()
        new_jobs.append(
            q.enqueue(
                jobs.import_revision_job,
                source,
                revision,
                job_id=job_id,
                job_timeout=JOB_TIMEOUT,
                result_ttl=86400,
                failure_ttl=7 * 86400,
                description=f"import revision {revision} from {source}",
            )
        )
        enqueued.append(revision)
    if not new_jobs:
        return enqueued, active, None
    # The settle step runs once after this run's revisions, failed or not (what did
    # import still gets settled), and after any earlier settle still pending.
    waits: list[Job] = list(new_jobs)
    previous = redis.get(key(settings, "settle"))
    if previous:
        earlier = q.fetch_job(previous.decode())
        if earlier is not None and earlier.get_status(refresh=True) in ACTIVE:
            waits.append(earlier)
    settle = q.enqueue(
        jobs.settle_job,
        depends_on=Dependency(jobs=waits, allow_failure=True),
        job_timeout=JOB_TIMEOUT,
        result_ttl=86400,
        failure_ttl=7 * 86400,
        description="settle identities after the revisions",
    )
    redis.set(key(settings, "settle"), settle.id)
    return enqueued, active, settle
