"""Redis and RQ: the connection, kmdb's queue, its jobs' keys, and kmdb's own keys."""

from __future__ import annotations

import os
import re
from typing import cast

from redis import Redis
from redis.exceptions import RedisError, WatchError
from rq import Queue
from rq.executions import ExecutionRegistry
from rq.job import Job, JobStatus
from rq.registry import BaseRegistry
from rq.results import Result

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


class KmdbQueue(Queue):
    """RQ's queue, whose released jobs reach the queue even while other workers release theirs.

    RQ moves each job released by a finished dependency from the ready registry
    onto the queue under a WATCH of the whole registry, and leaves the job there
    when any other worker changed the registry meanwhile, until a worker's
    maintenance ten minutes later: two workers releasing jobs at once (joins of
    many dependents each) left thousands of jobs there. Here the job itself is
    watched: whoever moves it first changes its status, and the other one, told
    so by its failed transaction, leaves it.
    """

    def enqueue_ready_jobs_by_queue(self, job_ids_by_queue_name: dict[str, list[str]]) -> None:
        for queue_name, ids in job_ids_by_queue_name.items():
            target = (
                self
                if queue_name == self.name
                else KmdbQueue(queue_name, connection=self.connection)
            )
            try:
                target.enqueue_ready(ids)
            except Exception:  # RQ's maintenance enqueues what is left, as RQ would
                self.log.exception("Could not enqueue the ready jobs of queue %s", queue_name)

    def enqueue_ready(self, job_ids: list[str]) -> None:
        """Move these jobs from the ready registry onto the queue, each once."""
        registry = self.ready_job_registry
        jobs_ = Job.fetch_many(job_ids, connection=self.connection, serializer=self.serializer)
        for job_id, job in zip(job_ids, jobs_, strict=True):
            if job is None:
                self.connection.zrem(registry.key, job_id)
                continue
            while True:
                try:
                    with self.connection.pipeline() as pipe:
                        pipe.watch(job.key)  # type: ignore[no-untyped-call]
                        status = pipe.hget(job.key, "status")
                        ready = status is not None and _text(status) == READY
                        if ready and pipe.zscore(registry.key, job_id) is None:
                            pipe.unwatch()  # moved already by another worker
                            break
                        pipe.multi()
                        pipe.zrem(registry.key, job_id)
                        if ready:
                            job._status = JobStatus.READY_TO_ENQUEUE
                            self._enqueue_job(
                                job, pipeline=pipe, at_front=job.should_enqueue_at_front()
                            )
                        pipe.execute()
                    break
                except WatchError:
                    continue


READY = JobStatus.READY_TO_ENQUEUE.value


def queue(settings: Settings, redis: Redis) -> Queue:
    """kmdb's RQ queue (named by KMDB_QUEUE)."""
    return KmdbQueue(settings.queue, connection=redis)


def key(settings: Settings, *parts: str) -> str:
    """A Redis key of kmdb's own, under kmdb:<queue>:."""
    return ":".join(("kmdb", settings.queue, *parts))


# The kinds of kmdb's job ids: "<queue>-<kind>-..." (kmdb.orchestrate.graph).
JOB_KINDS = ("scan", "import", "settle", "join")


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def registries(q: Queue) -> list[BaseRegistry]:
    """Every registry RQ keeps for a queue: a job may stand in any of them."""
    return [
        q.started_job_registry,
        q.finished_job_registry,
        q.failed_job_registry,
        q.deferred_job_registry,
        q.ready_job_registry,
        q.scheduled_job_registry,
        q.canceled_job_registry,
    ]


def clear(settings: Settings, redis: Redis) -> int:
    """Delete kmdb's jobs and keys (never FLUSHDB: the Redis may be shared); return jobs removed.

    Jobs are found in the queue and its registries, and also by their ids, which
    begin with the queue's name: a job in no registry (half deleted, or left by a
    crash) goes too, with its executions and results.
    """
    q = queue(settings, redis)
    every_registry = registries(q)
    job_ids = {_text(i) for i in redis.lrange(q.key, 0, -1)}
    for registry in every_registry:
        # redis-py types zrange's answer for every combination of its arguments.
        for entry in cast("list[bytes | str]", redis.zrange(registry.key, 0, -1)):
            # The started registry lists "<job id>:<execution id>".
            job_ids.add(_text(entry).split(":", 1)[0])
    own = re.compile(
        rf"rq:(?:job:|job::|results:|executions?:)({re.escape(settings.queue)}-(?:{'|'.join(JOB_KINDS)})-[^:]*)"
    )
    keys = set()
    for raw in redis.scan_iter(match="rq:*", count=1000):
        name = _text(raw)
        found = own.match(name)
        if found:
            keys.add(name)
            job_ids.add(found.group(1))
    for job_id in job_ids:
        job = Job(job_id, connection=redis)
        keys.update((job.key, job.dependents_key, job.dependencies_key, f"rq:results:{job_id}"))
        keys.add(f"rq:executions:{job_id}")
    for registry in every_registry:
        keys.add(registry.key)
    keys.add(f"{q.key}:intermediate")
    keys.update(_text(k) for k in redis.scan_iter(match=key(settings, "*")))
    q.delete(delete_jobs=False)
    for name in sorted(keys):
        if name.startswith("rq:job:") and not name.endswith(("dependents", "dependencies")):
            origin = redis.hget(name, "origin")
            if origin is not None and _text(origin) != settings.queue:
                continue  # another queue's job whose id merely looks like ours
        redis.delete(name)
    return len(job_ids)


def purge(q: Queue, job_id: str) -> None:
    """Remove every key and registry entry of a job id, whatever an old job left behind.

    RQ's own Job.delete reads the job first, and fails on what a dead worker or a
    half-done delete leaves (an execution listed but expired, a hash without
    fields); this reads nothing but the ids of executions.
    """
    redis = q.connection
    job = Job(job_id, connection=redis)
    executions = ExecutionRegistry(job_id=job_id, connection=redis)
    execution_ids = [
        raw.decode() if isinstance(raw, bytes) else raw
        for raw in redis.zrange(executions.key, 0, -1)
    ]
    started = q.started_job_registry
    with redis.pipeline() as pipe:
        pipe.lrem(q.key, 0, job_id)
        for registry in registries(q):
            pipe.zrem(registry.key, job_id)
        # The started registry lists executions as "<job id>:<execution id>".
        for execution_id in execution_ids:
            pipe.zrem(started.key, f"{job_id}:{execution_id}")
            pipe.delete(f"rq:execution:{job_id}:{execution_id}")
        pipe.delete(
            job.key,
            job.dependents_key,
            job.dependencies_key,
            Result.get_key(job_id),  # type: ignore[no-untyped-call]  # untyped in RQ
            executions.key,
        )
        pipe.execute()
    for entry in cast("list[bytes | str]", redis.zrange(started.key, 0, -1)):
        text_ = entry.decode() if isinstance(entry, bytes) else entry
        if text_ == job_id or text_.startswith(job_id + ":"):
            redis.zrem(started.key, entry)


def _keys_of(job_id: str, redis: Redis) -> list[str]:
    """A job id's own keys: its hash, dependents, dependencies, results and executions."""
    job = Job(job_id, connection=redis)
    executions = ExecutionRegistry(job_id=job_id, connection=redis)
    return [
        _text(job.key),
        _text(job.dependents_key),
        _text(job.dependencies_key),
        f"rq:results:{job_id}",  # Result.get_key
        executions.key,
    ]


def purge_found(q: Queue, job_ids: list[str]) -> list[str]:
    """Purge (as purge does) the job ids that anything is left of; return those.

    What is left is found in one pipelined pass, whatever the number of ids (one
    EXISTS each, and one read of the queue and of each registry), and removed in
    two more: planning many jobs costs few round trips, and nothing for new ids.
    """
    redis = q.connection
    ids = list(dict.fromkeys(job_ids))
    if not ids:
        return []
    every_registry = registries(q)
    with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.exists(*_keys_of(job_id, redis))
        pipe.lrange(q.key, 0, -1)
        for registry in every_registry:
            pipe.zrange(registry.key, 0, -1)
        answers = pipe.execute()
    queued = {_text(raw) for raw in answers[len(ids)]}
    listed: dict[str, list[tuple[str, str]]] = {}
    for registry, entries in zip(every_registry, answers[len(ids) + 1 :], strict=True):
        for raw in entries:
            # The started registry lists executions as "<job id>:<execution id>".
            entry = _text(raw)
            listed.setdefault(entry.split(":", 1)[0], []).append((registry.key, entry))
    found = [
        job_id
        for job_id, count in zip(ids, answers[: len(ids)], strict=False)
        if count or job_id in queued or job_id in listed
    ]
    if not found:
        return []
    with redis.pipeline(transaction=False) as pipe:
        for job_id in found:
            pipe.zrange(ExecutionRegistry(job_id=job_id, connection=redis).key, 0, -1)
        executions = pipe.execute()
    started = q.started_job_registry
    with redis.pipeline(transaction=False) as pipe:
        for job_id, execution_ids in zip(found, executions, strict=True):
            if job_id in queued:
                pipe.lrem(q.key, 0, job_id)
            for registry in every_registry:
                pipe.zrem(registry.key, job_id)
            for registry_key, entry in listed.get(job_id, []):
                pipe.zrem(registry_key, entry)
            for execution_id in map(_text, execution_ids):
                pipe.zrem(started.key, f"{job_id}:{execution_id}")
                pipe.delete(f"rq:execution:{job_id}:{execution_id}")
            pipe.delete(*_keys_of(job_id, redis))
        pipe.execute()
    return found


def check_redis(settings: Settings, redis: Redis) -> None:
    """Raise ConfigError unless kmdb may write and delete its keys in this Redis."""
    probe = key(settings, "write-check", str(os.getpid()))
    try:
        redis.set(probe, b"1", px=60_000)
        redis.delete(probe)
    except RedisError as exc:
        raise ConfigError(
            f"kmdb may not change its keys in Redis at {mask_url(settings.redis_url)} ({exc}); "
            "nothing was changed. Check KMDB_REDIS_URL (a primary, not a read-only replica) "
            "and the user's rights."
        ) from None
