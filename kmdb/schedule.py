"""The RQ job graph of an import, and telling live jobs from a dead worker's.

One run of kmdb-import enqueues, for the revisions it found:

    scan jobs (aliases) -> settle -> import jobs -> settle

Each arrow is RQ's depends_on, allowing failures: whatever did import still
gets settled, and a re-run picks up what failed. Job ids are per revision, so a
revision already queued or running is never enqueued twice. A job left
"started" by a worker that died (SIGKILL, a lost machine) is found at once by
its revision's MySQL lock being free, and its part of the graph is planned anew.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from dataclasses import dataclass, field

from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Dependency, Job
from sqlalchemy import Engine, func, select

from kmdb import indexes, schema
from kmdb.db import insert_ignore
from kmdb.locks import held, is_held
from kmdb.parts import in_multiples, part_plan, save_plans
from kmdb.people import SETTLE_LOCK
from kmdb.queues import queue
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
SCAN_JOB = "kmdb.jobs.scan_revisions_job"
SETTLE_JOB = "kmdb.jobs.settle_job"
IMPORT_JOB = "kmdb.jobs.import_parts_job"
# Revision files smaller than KMDB_PART_SIZE / GROUP_SHARE share jobs of about that size
# (see groups): half a part, so that two workers still get jobs enough to finish together.
GROUP_SHARE = 2


@dataclass
class Plan:
    """What a run of kmdb-import enqueued and found."""

    enqueued: list[int] = field(default_factory=list)
    active: list[int] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
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


def is_dead(job: Job, engine: Engine, redis: Redis) -> bool:
    """Whether a started job's worker is gone (its lock is free, or its worker key expired)."""
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
    # Without MySQL locks (SQLite), trust the worker's own key, which expires without heartbeats.
    worker = job.worker_name
    return not worker or not redis.exists(f"rq:worker:{worker}")


def kmdb_jobs(q: Queue) -> list[Job]:
    """kmdb's jobs that are queued, started, deferred or scheduled."""
    ids = set(q.get_job_ids())
    for registry in (q.started_job_registry, q.deferred_job_registry, q.scheduled_job_registry):
        ids.update(registry.get_job_ids())
    return [j for j in Job.fetch_many(sorted(ids), connection=q.connection) if j is not None]


def live_jobs(q: Queue, engine: Engine) -> tuple[list[Job], list[Job]]:
    """(active jobs, started jobs whose worker died)."""
    active, dead = [], []
    for job in kmdb_jobs(q):
        status = job.get_status(refresh=False)
        if status == "started" and is_dead(job, engine, q.connection):
            dead.append(job)
        elif status in ACTIVE:
            active.append(job)
    return active, dead


def _enqueue(q: Queue, func, *args, job_id: str | None, meta: dict, depends_on=None, **kw) -> Job:
    if job_id:
        old = q.fetch_job(job_id)
        if old is not None:
            old.delete()
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
    active, dead = live_jobs(q, engine)
    if dead:
        # Jobs deferred behind a dead one would wait for ever: plan them all anew.
        plan.dead = [j.id for j in dead]
        log.warning("Jobs of dead workers found: %s; planning them again", ", ".join(plan.dead))
        torn = dead + [j for j in active if j.get_status(refresh=False) != "started"]
        revisions = sorted(set(revisions) | {n for j in torn for n in _revisions_of(j)})
        for job in torn:
            # Gone already (a job of a torn graph may finish meanwhile): nothing to delete.
            with contextlib.suppress(NoSuchJobError, ValueError):
                job.delete()
        active = [j for j in active if j.get_status(refresh=False) == "started"]
    # What live jobs cover: a revision whose scan is queued or running (its imports
    # wait behind it), and single parts. A revision is planned again for the parts no
    # live job covers, so that a dead part is not left behind while the revision's
    # other parts run.
    scanning = {n for j in active if j.meta.get("kmdb") == "scan" for n in _revisions_of(j)}
    importing = {unit for j in active if j.meta.get("kmdb") == "import" for unit in _parts_of(j)}
    busy = scanning | {r for r, _ in importing}
    candidates = [r for r in revisions if r not in scanning and (r, None) not in importing]
    running = [j for j in active if j.get_status(refresh=False) == "started"]
    with engine.connect() as conn:
        r = schema.revisions
        scanned = set(conn.execute(select(r.c.number).where(r.c.scanned.is_(True))).scalars())
        sightings = conn.execute(select(func.count()).select_from(schema.alias_sightings)).scalar()
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
    if not todo:
        if not active and sightings:
            # A settle that died left aliases to fold in.
            plan.settle = _enqueue(q, SETTLE_JOB, job_id=None, meta={"kmdb": "settle"})
        return plan

    budget = max(1, settings.part_size // GROUP_SHARE)
    multiple = settings.pool_size()
    to_scan = [n for n in todo if n not in scanned]
    scans = [
        _enqueue(
            q,
            SCAN_JOB,
            source,
            group,
            job_id=job_id(settings, "scan", group[0]) + _to(group[-1], len(group)),
            meta={"kmdb": "scan", "revisions": group},
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
        job_id=None,
        meta={"kmdb": "settle"},
        depends_on=_after(scans),
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
            meta={"kmdb": "import", "parts": [list(unit) for unit in group]},
            depends_on=_after([first_settle]),
            description=f"import {_parts_text(group, parts)} of {source}",
        )
        for group in groups(units, unit_sizes, budget, multiple)
    ]
    plan.settle = _enqueue(
        q,
        SETTLE_JOB,
        job_id=None,
        meta={"kmdb": "settle"},
        depends_on=_after(imports + running),
        description="settle people after the import",
    )
    plan.enqueued = todo
    plan.parts = len(imports)
    plan.scans = len(scans)
    return plan


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
    """Plan again the jobs of workers that died, with the source their jobs named."""
    q = queue(settings, redis)
    active, dead = live_jobs(q, engine)
    if not dead:
        return None
    sources = [j.args[0] for j in dead + active if j.args]
    return enqueue_import(settings, redis, engine, sources[0] if sources else "", [])


def pending(q: Queue, engine: Engine) -> tuple[int, int]:
    """(jobs a worker may still get: queued, scheduled, or deferred behind a live job; live started jobs)."""
    active, _dead = live_jobs(q, engine)
    started = sum(1 for j in active if j.get_status(refresh=False) == "started")
    waiting = len(active) - started
    return waiting, started
