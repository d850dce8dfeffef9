"""The RQ job graph of an import, and telling live jobs from a dead worker's.

One run of kmdb-import enqueues, for the revisions it found:

    scan jobs (aliases) -> settle -> import jobs -> settle

Each arrow is RQ's depends_on, allowing failures: whatever did import still
gets settled, and a re-run picks up what failed. Job ids are per revision, so a
revision already queued or running is never enqueued twice.

Any stop must leave a queue that the next plan completes. A plan (kmdb-import,
a burst worker, kmdb-import --wait) looks for what cannot finish by itself and
plans it anew, with the rest of the graph that has not started:

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
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field

from redis import Redis
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.executions import ExecutionRegistry
from rq.job import Dependency, Job
from rq.results import Result
from sqlalchemy import Engine, func, select

from kmdb.load import indexes, schema
from kmdb.load.engine import insert_ignore, is_mysql
from kmdb.load.locks import held, is_held
from kmdb.load.parts import in_multiples, part_plan, save_plans
from kmdb.load.settle import SETTLE_LOCK
from kmdb.orchestrate import queues
from kmdb.orchestrate.queues import key, queue
from kmdb.settings import Settings

log = logging.getLogger(__name__)

# Jobs may run for hours on a large revision; RQ's default of 180 s would kill them.
JOB_TIMEOUT = 24 * 3600
# A job this young may not have taken its lock yet (a work horse starts in well under a second).
GRACE = dt.timedelta(seconds=3)
ACTIVE = ("queued", "started", "deferred", "scheduled")
# Seconds between the two looks at a free lock before a started job is called dead.
RECHECK = 0.2
# The lock held while a graph is planned, and how long to wait for it (seconds).
PLAN_LOCK = "plan"
PLAN_WAIT = 120

# Jobs are named, not imported: kmdb-import then need not load the import code itself.
SCAN_JOB = "kmdb.orchestrate.jobs.scan_revisions_job"
SETTLE_JOB = "kmdb.orchestrate.jobs.settle_job"
IMPORT_JOB = "kmdb.orchestrate.jobs.import_parts_job"
# Revision files smaller than KMDB_PART_SIZE / GROUP_SHARE share jobs of about that size
# (see groups): half a part, so that two workers still get jobs enough to finish together.
GROUP_SHARE = 2


@dataclass
class Plan:
    """What a run of kmdb-import enqueued and found."""

    enqueued: list[int] = field(default_factory=list)
    active: list[int] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)  # jobs of workers that died
    stuck: list[str] = field(default_factory=list)  # jobs that waited on jobs never to run
    settle: Job | None = None
    parts: int = 0  # import jobs enqueued (a part of a big revision, or small revisions)
    scans: int = 0  # scan jobs enqueued


def job_id(settings: Settings, kind: str, revision: int, part: int | None = None) -> str:
    """The id of a revision's scan job, or of the import job of one of its parts."""
    return f"{settings.queue}-{kind}-{revision}" + ("" if part is None else f"-{part}")


def _revisions_of(job: Job) -> list[int]:
    """The revisions a scan or import job works on."""
    meta = job.meta or {}
    if "revisions" in meta:
        return list(meta["revisions"])
    if "parts" in meta:
        return sorted({revision for revision, _ in meta["parts"]})
    return [meta["revision"]] if "revision" in meta else []


def _parts_of(job: Job) -> list[tuple[int, int | None]]:
    """The (revision, part) units of an import job (part None: a whole revision)."""
    meta = job.meta or {}
    if "parts" in meta:
        return [(revision, part) for revision, part in meta["parts"]]
    return [(meta.get("revision"), meta.get("part"))]


def lock_of(job: Job) -> str | None:
    """The lock a live job holds from its start to its end: its first revision's or
    part's (a settle's is the settle lock); None for jobs that are not kmdb's."""
    kind = (job.meta or {}).get("kmdb")
    if kind == "import":
        revision, part = _parts_of(job)[0]
        if part is not None:
            return f"revision:{revision}:part:{part}"
    if kind in ("scan", "import"):
        return f"revision:{_revisions_of(job)[0]}"
    if kind == "settle":
        return SETTLE_LOCK
    return None


def groups(units: list, sizes: list[int | None], budget: int, multiple: int = 1) -> list[list]:
    """Consecutive units in groups of about budget bytes; a unit of unknown or larger size alone.

    Small revision files share a job (and its chunks and transactions): a job per
    file of 2,000 lines spent more time in overhead than in importing. A run of
    small files is cut into as many groups as its size needs at budget bytes
    each, all alike in size (a group may pass budget by less than one of its
    files), so that no short job is left over and workers finish together; more
    than one group come in a multiple of `multiple` (the pool's workers), where
    the run has files enough.
    """
    grouped: list[list] = []
    run: list[tuple] = []
    for unit, size in zip(units, sizes, strict=True):
        if size is None or size >= budget:
            grouped += _alike(run, budget, multiple)
            run = []
            grouped.append([unit])
        else:
            run.append((unit, size))
    return grouped + _alike(run, budget, multiple)


def _alike(run: list[tuple], budget: int, multiple: int) -> list[list]:
    """(unit, size) pairs in consecutive groups of equal shares: a unit goes to the share
    in which its middle byte falls."""
    total = sum(size for _, size in run)
    count = in_multiples(-(-total // budget), multiple)
    if not count:
        return [[unit for unit, _ in run]] if run else []  # empty files: one job for all
    share = total / count
    cut: list[list] = [[] for _ in range(count)]
    before = 0
    for unit, size in run:
        cut[min(count - 1, int((before + size / 2) // share))].append(unit)
        before += size
    return [group for group in cut if group]


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
    if held is not None:
        if held:
            return False
        # A job frees its lock a moment before RQ marks it finished: look again.
        time.sleep(RECHECK)
        try:
            if job.get_status(refresh=True) != "started":
                return False
        except NoSuchJobError:
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
    stale_plan: dict | None = None  # the mark of a planner that died half-way (its jobs: stuck)


def _waiting_on_nothing(active: list[Job], redis: Redis) -> set[str]:
    """Deferred jobs none of whose dependencies is active or waits on an active job.

    RQ enqueues a deferred job when its last dependency ends; one whose dependencies
    have all ended, or are gone, while it is still deferred will wait for ever.
    """
    deferred = {j.id: j for j in active if j.get_status(refresh=False) == "deferred"}
    hopeful = {j.id for j in active if j.id not in deferred}
    depends: dict[str, set[str]] = {}
    for job_id, job in deferred.items():
        depends[job_id] = {
            raw.decode() if isinstance(raw, bytes) else raw
            for raw in redis.smembers(job.dependencies_key)
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
        for raw, score in q.connection.zrange(q.failed_job_registry.key, 0, -1, withscores=True)
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


def _marker(settings: Settings) -> str:
    return key(settings, "planning")


def _stale_plan(settings: Settings, redis: Redis, engine: Engine, planning: bool) -> dict | None:
    """The mark of a plan whose planner died half-way through enqueueing it, if any."""
    raw = redis.get(_marker(settings))
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
        for registry in queues.registries(q):
            pipe.zrem(registry.key, job_id)
        # The started registry lists executions as "<job id>:<execution id>".
        for execution_id in execution_ids:
            pipe.zrem(started.key, f"{job_id}:{execution_id}")
            pipe.delete(f"rq:execution:{job_id}:{execution_id}")
        pipe.delete(
            job.key,
            job.dependents_key,
            job.dependencies_key,
            Result.get_key(job_id),
            executions.key,
        )
        pipe.execute()
    for entry in redis.zrange(started.key, 0, -1):
        text_ = entry.decode() if isinstance(entry, bytes) else entry
        if text_ == job_id or text_.startswith(job_id + ":"):
            redis.zrem(started.key, entry)


def _enqueue(q: Queue, func, *args, job_id: str, meta: dict, depends_on=None, **kw) -> Job:
    # Whatever an earlier job of this id left (a dead worker's, a half-deleted one) goes first.
    purge(q, job_id)
    return q.enqueue(
        func,
        *args,
        job_id=job_id,
        meta=meta,
        depends_on=depends_on,
        job_timeout=JOB_TIMEOUT,
        result_ttl=86400,
        failure_ttl=7 * 86400,
        **kw,
    )


def _after(jobs_: list[Job]) -> Dependency | None:
    return Dependency(jobs=jobs_, allow_failure=True) if jobs_ else None


def _unfinished_parts(
    engine: Engine, revisions: list[int], sizes: dict[int, int], settings: Settings
) -> dict[int, list[int]]:
    """The parts of each revision still to import, planning those not planned yet."""
    p = schema.revision_parts
    with engine.connect() as conn:
        rows = conn.execute(
            select(p.c.revision, p.c.part, p.c.status).where(p.c.revision.in_(revisions))
        ).all()
    planned: dict[int, list[int]] = {}
    for revision, part, status in rows:
        planned.setdefault(revision, [])
        if status != "done":
            planned[revision].append(part)
    new = [
        row
        for n in revisions
        if n not in planned
        for row in part_plan(n, sizes.get(n, 0), settings.part_size, settings.pool_size())
    ]
    save_plans(engine, new)
    for row in new:
        planned.setdefault(row["revision"], []).append(row["part"])
    return {n: sorted(planned.get(n, [])) or [0] for n in revisions}


def enqueue_import(
    settings: Settings,
    redis: Redis,
    engine: Engine,
    source: str,
    revisions: list[int],
    sizes: dict[int, int] | None = None,
) -> Plan:
    """Enqueue the graph for the revisions not queued or running yet.

    sizes (bytes per revision) plan the parts of revisions never planned before;
    a revision of unknown size gets one part. One process plans at a time: two
    workers that find the same dead job would otherwise both tear its graph down.
    """
    with held(engine, PLAN_LOCK, wait=PLAN_WAIT):
        return _enqueue_import(settings, redis, engine, source, revisions, sizes)


def _source_of(jobs_: list[Job]) -> str:
    """The source that jobs name (in their meta; jobs of earlier builds: their first argument)."""
    for job in jobs_:
        source = (job.meta or {}).get("source")
        if isinstance(source, str) and source:
            return source
    for job in jobs_:
        try:
            args = job.args
        except Exception:  # a job whose function or arguments no longer load
            continue
        if args and isinstance(args[0], str) and args[0]:
            return args[0]
    return ""


def needs_settle(engine: Engine) -> bool:
    """Whether a settle left something undone: sightings, unsettled aliases, put-off indexes."""
    a, st = schema.aliases, schema.settle_state
    with engine.connect() as conn:
        if conn.execute(select(1).select_from(schema.alias_sightings).limit(1)).first():
            return True
        newest = conn.execute(select(func.max(a.c.id))).scalar() or 0
        upto = conn.execute(select(st.c.aliases_upto).where(st.c.id == 1)).scalar()
        if newest and (upto is None or newest > upto):
            return True
        return bool(indexes.missing(conn)) and indexes.has_rows(conn)


def _enqueue_import(
    settings: Settings,
    redis: Redis,
    engine: Engine,
    source: str,
    revisions: list[int],
    sizes: dict[int, int] | None,
) -> Plan:
    q = queue(settings, redis)
    plan = Plan()
    found = survey(settings, q, engine, planning=True)
    active = found.active
    torn: list[Job] = []
    if found.dead or found.stuck:
        # Jobs deferred behind a dead or stuck one would wait for ever: plan anew all that
        # has not started, around the jobs still running.
        plan.dead = [j.id for j in found.dead]
        plan.stuck = [j.id for j in found.stuck]
        if plan.dead:
            log.warning("Jobs of dead workers found: %s; planning them again", ", ".join(plan.dead))
        if plan.stuck:
            log.warning(
                "Jobs that would wait for ever: %s; planning them again", ", ".join(plan.stuck)
            )
        torn = (
            found.dead
            + found.stuck
            + [j for j in active if j.get_status(refresh=False) != "started"]
        )
        revisions = sorted(set(revisions) | {n for j in torn for n in _revisions_of(j)})
        source = source or _source_of(torn)
        for job in torn:
            purge(q, job.id)
        active = [j for j in active if j.get_status(refresh=False) == "started"]
    if found.stale_plan is not None:
        # The revisions it was planning may have no job left at all.
        revisions = sorted(set(revisions) | set(found.stale_plan.get("revisions", [])))
        source = source or str(found.stale_plan.get("source") or "")
    if found.stale_plan is not None or torn:
        redis.delete(_marker(settings))
    running = [j for j in active if j.get_status(refresh=False) == "started"]
    # What live jobs cover: a revision whose scan is queued (its imports wait behind it in
    # a graph left whole), and single parts. A revision is planned again for the parts no
    # live job covers, so that a dead part is not left behind while the revision's other
    # parts run. A running scan's graph was torn down when anything else of it was: its
    # revisions are imported by the new graph, after the scan.
    scanning = {n for j in active if j.meta.get("kmdb") == "scan" for n in _revisions_of(j)}
    running_scans = [j for j in running if j.meta.get("kmdb") == "scan"]
    importing = {unit for j in active if j.meta.get("kmdb") == "import" for unit in _parts_of(j)}
    busy = scanning | {r for r, _ in importing}
    if torn:
        scanning = set()
    being_scanned = {n for j in running_scans for n in _revisions_of(j)}
    candidates = [r for r in revisions if r not in scanning and (r, None) not in importing]
    if candidates and not source:
        log.warning("No source known for revisions %s; kmdb-import plans them.", candidates)
        candidates = []
    with engine.connect() as conn:
        r = schema.revisions
        scanned = set(conn.execute(select(r.c.number).where(r.c.scanned.is_(True))).scalars())
    if candidates:
        # Known from now on, so kmdb-status counts them before a worker starts.
        with engine.begin() as conn:
            conn.execute(
                insert_ignore(schema.revisions),
                [
                    {"number": n, "status": "pending", "size": (sizes or {}).get(n)}
                    for n in candidates
                ],
            )
    parts = {
        n: [part for part in unfinished if (n, part) not in importing]
        for n, unfinished in _unfinished_parts(engine, candidates, sizes or {}, settings).items()
    }
    todo = [n for n in candidates if parts[n]]
    plan.active = sorted(r for r in revisions if r in busy and r not in todo)
    token = uuid.uuid4().hex[:12]

    def meta(kind: str, **more: object) -> dict:
        return {"kmdb": kind, "source": source, "plan": token, **more}

    if not todo:
        if torn or (not active and needs_settle(engine)):
            # A settle that died or never ran left aliases to fold in, or indexes to build.
            plan.settle = _enqueue(
                q,
                SETTLE_JOB,
                job_id=_settle_id(settings, "after", token),
                meta=meta("settle"),
                depends_on=_after(running),
                description="settle people after the import",
            )
        return plan

    # A planner that dies half-way leaves this mark: the next plan tears its jobs down.
    redis.set(
        _marker(settings),
        json.dumps(
            {
                "token": token,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "at": time.time(),
                "revisions": todo,
                "source": source,
            }
        ),
    )
    budget = max(1, settings.part_size // GROUP_SHARE)
    multiple = settings.pool_size()
    to_scan = [n for n in todo if n not in scanned and n not in being_scanned]
    scans = [
        _enqueue(
            q,
            SCAN_JOB,
            source,
            group,
            job_id=job_id(settings, "scan", group[0]) + _to(group[-1], len(group)),
            meta=meta("scan", revisions=group),
            description=f"scan {_revisions_text(group)} of {source} for aliases",
        )
        for group in groups(to_scan, [(sizes or {}).get(n) for n in to_scan], budget, multiple)
    ]
    if not active:
        # Into empty tables, indexes are cheaper built once at the end (kmdb.indexes).
        indexes.put_off(engine)
    first_settle = _enqueue(
        q,
        SETTLE_JOB,
        True,
        job_id=_settle_id(settings, "before", token),
        meta=meta("settle", before=True),
        depends_on=_after(scans + running_scans),
        description="settle people before the import",
    )
    units = [(n, part) for n in todo for part in parts[n]]
    unit_sizes = [_part_bytes((sizes or {}).get(n), len(parts[n])) for n, _ in units]
    imports = [
        _enqueue(
            q,
            IMPORT_JOB,
            source,
            [list(unit) for unit in group],
            job_id=job_id(settings, "import", *group[0]) + _to(group[-1], len(group)),
            meta=meta("import", parts=[list(unit) for unit in group]),
            depends_on=_after([first_settle]),
            description=f"import {_parts_text(group, parts)} of {source}",
        )
        for group in groups(units, unit_sizes, budget, multiple)
    ]
    plan.settle = _enqueue(
        q,
        SETTLE_JOB,
        job_id=_settle_id(settings, "after", token),
        meta=meta("settle"),
        depends_on=_after(imports + running),
        description="settle people after the import",
    )
    redis.delete(_marker(settings))
    plan.enqueued = todo
    plan.parts = len(imports)
    plan.scans = len(scans)
    return plan


def _settle_id(settings: Settings, when: str, token: str) -> str:
    """A settle job's id: under the queue's name, so that clearing finds it even orphaned."""
    return f"{settings.queue}-settle-{when}-{token}"


def _to(last: object, count: int) -> str:
    """The end of a group job's id."""
    if count == 1:
        return ""
    return "-to-" + ("-".join(map(str, last)) if isinstance(last, tuple) else str(last))


def _revisions_text(revisions: list[int]) -> str:
    if len(revisions) == 1:
        return f"revision {revisions[0]}"
    return f"revisions {revisions[0]}-{revisions[-1]} ({len(revisions)} files)"


def _parts_text(units: list[tuple[int, int]], parts: dict[int, list[int]]) -> str:
    if len(units) == 1:
        revision, part = units[0]
        count = len(parts[revision])
        return f"revision {revision}" + (f", part {part + 1} of {count}" if count > 1 else "")
    return _revisions_text(sorted({revision for revision, _ in units}))


def _part_bytes(size: int | None, count: int) -> int | None:
    return None if size is None else size // max(1, count)


def replan_dead(settings: Settings, redis: Redis, engine: Engine) -> Plan | None:
    """Plan again what cannot finish by itself (see the module's docstring), with the
    source its jobs named; None when there was nothing such."""
    q = queue(settings, redis)
    found = survey(settings, q, engine)
    if not found.dead and not found.stuck and found.stale_plan is None:
        return None
    return enqueue_import(settings, redis, engine, "", [])


def pending(q: Queue, engine: Engine) -> tuple[int, int]:
    """(jobs a worker may still get: queued, scheduled, or deferred behind a live job; live started jobs)."""
    active, _dead = live_jobs(q, engine)
    started = sum(1 for j in active if j.get_status(refresh=False) == "started")
    waiting = len(active) - started
    return waiting, started
