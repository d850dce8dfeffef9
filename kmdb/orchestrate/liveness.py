"""Telling live jobs from a dead worker's, and finding what cannot finish by itself.

Any stop must leave a queue that the next plan completes. A plan (kmdb-import,
a burst worker, kmdb-import --wait) looks here for what cannot finish by
itself, and plans it anew (kmdb.orchestrate.graph) with the rest of the graph
that has not started:

- a job left "started" by a worker that died (SIGKILL, a lost machine): its
  lock is free (MySQL), or its worker's process or key is gone (SQLite);
- a job that RQ moved to failed because its worker died (AbandonedJobError);
- a deferred job that waits only on jobs that will never run or end (a
  dependency stopped, deleted, or failed without its dependents enqueued);
- the jobs of a plan whose planner died half-way through enqueueing it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, cast

from redis import Redis
from rq import Queue, Worker
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.results import Result
from sqlalchemy import Engine

from kmdb.load.engine import is_mysql
from kmdb.load.locks import PLAN_LOCK, is_held
from kmdb.orchestrate.job_meta import lock_of
from kmdb.orchestrate.queues import key
from kmdb.settings import Settings

# A job this young may not have taken its lock yet (a work horse starts in well under a second).
GRACE = dt.timedelta(seconds=3)
ACTIVE = ("queued", "started", "deferred", "scheduled")
# Seconds between the two looks at a free lock before a started job is called dead.
RECHECK = 0.2
# How long a planner waits for another one to finish (seconds); a planner's mark older
# than this, of a process that cannot be looked at, is a dead planner's.
PLAN_WAIT = 120


def _process_alive(host: str | None, pid: int | None) -> bool | None:
    """Whether a process of this machine runs (None: not this machine's, or unknown)."""
    if not pid or host != socket.gethostname():
        return None
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # A killed process not yet reaped by its parent is a zombie: dead all the same.
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def worker_alive(redis: Redis, name: str | None) -> bool:
    """Whether an RQ worker runs: its key is there and, on this machine, its process."""
    if not name:
        return False
    worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + name, connection=redis)
    if worker is None:
        return False
    return _process_alive(worker.hostname, worker.pid) is not False


def is_dead(job: Job, engine: Engine, redis: Redis) -> bool:
    """Whether a started job's worker is gone (its lock is free, or its worker is gone)."""
    started = job.started_at
    if started is not None:
        started = started.replace(tzinfo=None)
        if dt.datetime.now(dt.UTC).replace(tzinfo=None) - started < GRACE:
            return False
    lock = lock_of(job)
    held = is_held(engine, lock) if lock else None
    if lock and held is not None:  # held is None without a lock
        if held:
            return False
        # A job frees its lock a moment before RQ marks it finished: look again.
        time.sleep(RECHECK)
        try:
            if job.get_status(refresh=True) != "started":
                return False
        except (NoSuchJobError, InvalidJobOperation):  # gone: another planner purged it
            return False
        return not is_held(engine, lock)
    # Without MySQL locks (SQLite, one machine): the worker's process, else its key (which
    # expires only minutes after its last heartbeat).
    return not worker_alive(redis, job.worker_name)


def kmdb_jobs(q: Queue) -> list[Job]:
    """kmdb's jobs that are queued, started, deferred, ready or scheduled."""
    ids = set(q.get_job_ids())
    registries = (
        q.started_job_registry,
        q.deferred_job_registry,
        q.scheduled_job_registry,
        q.ready_job_registry,
    )
    for registry in registries:
        ids.update(registry.get_job_ids())
    return [j for j in Job.fetch_many(sorted(ids), connection=q.connection) if j is not None]


def live_jobs(q: Queue, engine: Engine) -> tuple[list[Job], list[Job]]:
    """(active jobs, started jobs whose worker died)."""
    active, dead = [], []
    for job in kmdb_jobs(q):
        status = job.get_status(refresh=False)
        if status == "started" and is_dead(job, engine, q.connection):
            dead.append(job)
        elif status in ACTIVE or status == "ready_to_enqueue":
            active.append(job)
    return active, dead


@dataclass
class Survey:
    """kmdb's jobs, sorted by whether they can still finish."""

    active: list[Job] = field(default_factory=list)  # queued, running, or waiting on those
    dead: list[Job] = field(default_factory=list)  # their workers died
    stuck: list[Job] = field(default_factory=list)  # waiting on jobs that never run or end
    # The mark of a planner that died half-way (its jobs: stuck).
    stale_plan: dict[str, Any] | None = None


def _waiting_on_nothing(active: list[Job], redis: Redis) -> set[str]:
    """Deferred jobs none of whose dependencies is active or waits on an active job.

    RQ enqueues a deferred job when its last dependency ends; one whose dependencies
    have all ended, or are gone, while it is still deferred will wait for ever.
    """
    deferred = {j.id: j for j in active if j.get_status(refresh=False) == "deferred"}
    hopeful = {j.id for j in active if j.id not in deferred}
    with redis.pipeline(transaction=False) as pipe:
        for job in deferred.values():
            pipe.smembers(job.dependencies_key)
        members = pipe.execute()
    depends = {
        job_id: {raw.decode() if isinstance(raw, bytes) else raw for raw in raws}
        for job_id, raws in zip(deferred, members, strict=True)
    }
    changed = True
    while changed:
        changed = False
        for job_id in deferred:
            if job_id not in hopeful and depends[job_id] & hopeful:
                hopeful.add(job_id)
                changed = True
    return set(deferred) - hopeful


# Failed jobs already judged, per queue, by id and place in the failed registry (a job
# planned again under the same id and failing anew has another): each is read once.
_judged: dict[str, set[tuple[str, float]]] = {}


def abandoned_jobs(q: Queue) -> list[Job]:
    """kmdb's jobs that RQ moved to failed because their worker died."""
    judged = _judged.setdefault(q.name, set())
    entries = [
        (raw.decode() if isinstance(raw, bytes) else raw, score)
        for raw, score in cast(
            # redis-py types zrange's answer for every combination of its arguments
            "list[tuple[bytes | str, float]]",
            q.connection.zrange(q.failed_job_registry.key, 0, -1, withscores=True),
        )
    ]
    fresh = [entry for entry in entries if entry not in judged]
    found = []
    jobs_ = Job.fetch_many([job_id for job_id, _ in fresh], connection=q.connection)
    for entry, job in zip(fresh, jobs_, strict=True):
        if job is None or not (job.meta or {}).get("kmdb"):
            judged.add(entry)
            continue
        result = Result.fetch_latest(job)
        if result is not None and "AbandonedJobError" in (result.exc_string or ""):
            found.append(job)
        else:
            judged.add(entry)
    return found


def survey(settings: Settings, q: Queue, engine: Engine, planning: bool = False) -> Survey:
    """Sort kmdb's jobs into those that can finish and those to plan again.

    planning: the caller holds the plan lock, so no other planner is at work.
    """
    active, dead = live_jobs(q, engine)
    dead += abandoned_jobs(q)
    found = Survey(active=active, dead=dead)
    stale = _stale_plan(settings, q.connection, engine, planning)
    stuck = _waiting_on_nothing(active, q.connection)
    if stuck:
        # RQ enqueues dependents a moment after their last dependency ends: look again.
        time.sleep(RECHECK)
        active, _ = live_jobs(q, engine)
        stuck &= _waiting_on_nothing(active, q.connection)
        found.active = active
    if stale is not None:
        found.stale_plan = stale
        stuck |= {
            j.id
            for j in found.active
            if (j.meta or {}).get("plan") == stale.get("token")
            and j.get_status(refresh=False) != "started"
        }
    found.stuck = [j for j in found.active if j.id in stuck]
    found.active = [j for j in found.active if j.id not in stuck]
    return found


def plan_marker(settings: Settings) -> str:
    """The Redis key of the mark a planner leaves while it enqueues a graph."""
    return key(settings, "planning")


def _stale_plan(
    settings: Settings, redis: Redis, engine: Engine, planning: bool
) -> dict[str, Any] | None:
    """The mark of a plan whose planner died half-way through enqueueing it, if any."""
    raw = redis.get(plan_marker(settings))
    if raw is None:
        return None
    try:
        mark = json.loads(raw)
        if not isinstance(mark, dict):
            raise TypeError(type(mark))
    except (ValueError, TypeError):
        return {}
    if is_mysql(engine):
        # Planners hold the plan lock: a mark left while it is free is a dead planner's.
        if planning or not is_held(engine, PLAN_LOCK):
            return mark
        return None
    alive = _process_alive(mark.get("host"), mark.get("pid"))
    if alive is False or (alive is None and time.time() - float(mark.get("at", 0)) > PLAN_WAIT):
        return mark
    if planning and mark.get("pid") == os.getpid() and mark.get("host") == socket.gethostname():
        return mark  # this process failed half-way through a plan of its own
    return None


def started_jobs(q: Queue) -> list[Job]:
    """The jobs of the started registry: one per busy worker, a cheap look."""
    ids = sorted(set(q.started_job_registry.get_job_ids()))
    return [j for j in Job.fetch_many(ids, connection=q.connection) if j is not None]


def _live_started(q: Queue, engine: Engine) -> tuple[list[Job], list[Job]]:
    """(started jobs whose worker lives, started jobs whose worker died)."""
    live: list[Job] = []
    dead: list[Job] = []
    for job in started_jobs(q):
        if job.get_status(refresh=False) != "started":
            continue
        (dead if is_dead(job, engine, q.connection) else live).append(job)
    return live, dead


def _waiting_counts(q: Queue) -> tuple[int, int, int]:
    """(queued, ready to enqueue, deferred or scheduled) as Redis counts them: cheap, but
    with whatever another program's or a half-deleted job left."""
    with q.connection.pipeline(transaction=False) as pipe:
        pipe.llen(q.key)
        pipe.zcard(q.ready_job_registry.key)
        pipe.zcard(q.deferred_job_registry.key)
        pipe.zcard(q.scheduled_job_registry.key)
        queued, ready, deferred, scheduled = pipe.execute()
    return int(queued), int(ready), int(deferred) + int(scheduled)


def worth_surveying(settings: Settings, q: Queue, engine: Engine) -> bool:
    """Whether a survey may find something to plan again, told from a few Redis commands.

    Yes for a started job whose worker died, a job RQ failed as abandoned, a dead
    planner's mark, and deferred jobs that nothing can release any more (no job
    queued, running or ready). A deferred job waiting on nothing while other jobs
    still run is found once they have ended: a survey reads every job, too much
    to pay each time a worker's queue runs empty in an import of many jobs.
    """
    live, dead = _live_started(q, engine)
    if dead or abandoned_jobs(q):
        return True
    if _stale_plan(settings, q.connection, engine, planning=False) is not None:
        return True
    if live:
        return False
    queued, ready, deferred = _waiting_counts(q)
    return not queued and not ready and deferred > 0


def pending(q: Queue, engine: Engine) -> tuple[int, int]:
    """(jobs a worker may still get: queued, scheduled, or deferred behind a live job; live started jobs).

    While a job runs or waits in the queue, the count of jobs waiting is Redis's
    (a few commands); when none does, every job is read to tell those that wait
    behind a live job from those that never will.
    """
    live, _dead = _live_started(q, engine)
    queued, ready, deferred = _waiting_counts(q)
    if live or queued:
        return queued + ready + deferred, len(live)
    if not ready and not deferred:
        return 0, 0
    active, _dead = live_jobs(q, engine)
    started = sum(1 for j in active if j.get_status(refresh=False) == "started")
    return len(active) - started, started
