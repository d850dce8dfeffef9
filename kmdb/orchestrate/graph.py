"""The RQ job graph of an import.

One run of kmdb-import enqueues, for the revisions it found:

    scan jobs (aliases) -> settle -> import jobs               -> settle
                                  -> re-point of older rows  -^

The settle before the import writes people's new canonical ids; the rows stored
before it that must follow move in a job beside the imports (kmdb.load.repoint).

Each arrow is RQ's depends_on, allowing failures: whatever did import still
gets settled, and a re-run picks up what failed. An arrow from or to many jobs
goes through a small tree of no-op join jobs (see _Graph), so that a job's
Redis cost stays the same however many jobs a plan has. Job ids are per revision, so a
revision already queued or running is never enqueued twice. A plan also plans
anew what cannot finish by itself (kmdb.orchestrate.liveness), one planner at a
time.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from rq import Queue
from rq.job import Dependency, Job, JobStatus
from sqlalchemy import Engine, func, select

from kmdb.load import indexes, schema
from kmdb.load.engine import insert_ignore
from kmdb.load.locks import PLAN_LOCK, held
from kmdb.load.parts import part_plan, save_plans
from kmdb.orchestrate.job_meta import parts_of, revisions_of
from kmdb.orchestrate.liveness import PLAN_WAIT, plan_marker, survey, worth_surveying
from kmdb.orchestrate.packing import groups
from kmdb.orchestrate.queues import purge, purge_found, queue
from kmdb.settings import Settings

log = logging.getLogger(__name__)

# Jobs may run for hours on a large revision; RQ's default of 180 s would kill them.
JOB_TIMEOUT = 24 * 3600
# Jobs are named, not imported: kmdb-import then need not load the import code itself.
SCAN_JOB = "kmdb.orchestrate.jobs.scan_revisions_job"
SETTLE_JOB = "kmdb.orchestrate.jobs.settle_job"
REPOINT_JOB = "kmdb.orchestrate.jobs.repoint_job"
IMPORT_JOB = "kmdb.orchestrate.jobs.import_parts_job"
JOIN_JOB = "kmdb.orchestrate.jobs.join_job"
# The join trees' widths (see _Graph): a job waits on FAN_IN jobs at most, and a job
# has FAN_OUT dependents at most. A job's dependency costs about FAN_IN commands each
# time one ends; a join is one more (cheap) job per FAN_IN or FAN_OUT jobs.
FAN_IN = 10
FAN_OUT = 64
# Jobs written per pipelined round trip.
WRITE_BATCH = 1000
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
    joins: int = 0  # no-op jobs between stages of many jobs (see _Graph)


def job_id(settings: Settings, kind: str, revision: int, part: int | None = None) -> str:
    """The id of a revision's scan job, or of the import job of one of its parts."""
    return f"{settings.queue}-{kind}-{revision}" + ("" if part is None else f"-{part}")


def _enqueue(
    q: Queue,
    func: str,
    *args: object,
    job_id: str,
    meta: dict[str, object],
    depends_on: Dependency | None = None,
    **kw: object,
) -> Job:
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
    """Whether a settle left something undone: sightings, unsettled aliases, rows to
    re-point, put-off indexes."""
    a, st = schema.aliases, schema.settle_state
    with engine.connect() as conn:
        for table in (schema.alias_sightings, schema.repoint_state):
            if conn.execute(select(1).select_from(table).limit(1)).first():
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
        revisions = sorted(set(revisions) | {n for j in torn for n in revisions_of(j)})
        source = source or _source_of(torn)
        purge_found(q, [job.id for job in torn])
        active = [j for j in active if j.get_status(refresh=False) == "started"]
    if found.stale_plan is not None:
        # The revisions it was planning may have no job left at all.
        revisions = sorted(set(revisions) | set(found.stale_plan.get("revisions", [])))
        source = source or str(found.stale_plan.get("source") or "")
    if found.stale_plan is not None or torn:
        redis.delete(plan_marker(settings))
    running = [j for j in active if j.get_status(refresh=False) == "started"]
    # What live jobs cover: a revision whose scan is queued (its imports wait behind it in
    # a graph left whole), and single parts. A revision is planned again for the parts no
    # live job covers, so that a dead part is not left behind while the revision's other
    # parts run. A running scan's graph was torn down when anything else of it was: its
    # revisions are imported by the new graph, after the scan.
    scanning = {n for j in active if j.meta.get("kmdb") == "scan" for n in revisions_of(j)}
    running_scans = [j for j in running if j.meta.get("kmdb") == "scan"]
    importing = {unit for j in active if j.meta.get("kmdb") == "import" for unit in parts_of(j)}
    busy = scanning | {r for r, _ in importing}
    if torn:
        scanning = set()
    being_scanned = {n for j in running_scans for n in revisions_of(j)}
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

    def meta(kind: str, **more: object) -> dict[str, object]:
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
        plan_marker(settings),
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
    graph = _Graph(q, settings, token)
    to_scan = [n for n in todo if n not in scanned and n not in being_scanned]
    scans = [
        graph.add(
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
        # Into empty tables, indexes are cheaper built once at the end (kmdb.load.indexes).
        indexes.put_off(engine)
    first_settle = graph.add(
        SETTLE_JOB,
        True,
        job_id=_settle_id(settings, "before", token),
        meta=meta("settle", before=True),
        after=graph.funnel([j.id for j in scans], "scanned", meta("join"))
        + [j.id for j in running_scans],
        description="settle people before the import",
    )
    # Older rows of the people the settle changes move beside the imports, which need
    # none of it (kmdb.load.repoint); first, so that a worker takes it at once.
    repoint = graph.add(
        REPOINT_JOB,
        job_id=_settle_id(settings, "repoint", token),
        meta=meta("settle", repoint=True),
        after=[first_settle.id],
        at_front=True,
        description="re-point older rows of the people the settle changed",
    )
    units = [(n, part) for n in todo for part in parts[n]]
    unit_sizes = [_part_bytes((sizes or {}).get(n), len(parts[n])) for n, _ in units]
    unit_groups = groups(units, unit_sizes, budget, multiple)
    waits = graph.spread([first_settle.id], len(unit_groups), "settled", meta("join"))
    imports = [
        graph.add(
            IMPORT_JOB,
            source,
            [list(unit) for unit in group],
            job_id=job_id(settings, "import", *group[0]) + _to(group[-1], len(group)),
            meta=meta("import", parts=[list(unit) for unit in group]),
            after=wait,
            description=f"import {_parts_text(group, parts)} of {source}",
        )
        for group, wait in zip(unit_groups, waits, strict=True)
    ]
    plan.settle = graph.add(
        SETTLE_JOB,
        job_id=_settle_id(settings, "after", token),
        meta=meta("settle"),
        after=graph.funnel([j.id for j in imports] + [repoint.id], "imported", meta("join"))
        + [j.id for j in running],
        description="settle people after the import",
    )
    graph.write(own=[j.id for j in scans + imports])
    redis.delete(plan_marker(settings))
    plan.enqueued = todo
    plan.parts = len(imports)
    plan.scans = len(scans)
    plan.joins = graph.joins
    return plan


class _Graph:
    """The jobs of one plan, written to Redis in a few pipelined passes.

    RQ checks every dependency of a job each time one of them ends (WATCH, then
    an HGET each), and moves all of a job's dependents in one transaction when
    it ends: a job waiting on n jobs costs n squared, a job with n dependents one
    transaction of n. Between a stage and the next of many jobs stand no-op join
    jobs (meta kmdb="join"), in trees of at most FAN_IN dependencies and FAN_OUT
    dependents per job: every job then costs a bounded number of commands.

    A job waiting on jobs of this plan only is written as RQ would write it,
    deferred, with no watch: none of its dependencies can run before the first
    jobs (those waiting on nothing) are enqueued, last. A job that also waits on
    jobs already running goes through RQ's own enqueue, which watches them.
    """

    def __init__(self, q: Queue, settings: Settings, token: str) -> None:
        self.q = q
        self.settings = settings
        self.token = token
        self.jobs: list[Job] = []
        self.joins = 0

    def add(
        self,
        func: str,
        *args: object,
        job_id: str,
        meta: dict[str, Any],
        description: str,
        after: list[str] | None = None,
        at_front: bool = False,
    ) -> Job:
        depends_on = (
            Dependency(jobs=list(after), allow_failure=True, enqueue_at_front=at_front)
            if after
            else None
        )
        job = self.q.create_job(
            func,
            args=args,
            job_id=job_id,
            meta=meta,
            depends_on=depends_on,
            timeout=JOB_TIMEOUT,
            result_ttl=86400,
            failure_ttl=7 * 86400,
            description=description,
        )
        self.jobs.append(job)
        return job

    def _join(self, after: list[str], name: str, meta: dict[str, Any]) -> str:
        self.joins += 1
        return self.add(
            JOIN_JOB,
            job_id=f"{self.settings.queue}-join-{self.token}-{name}",
            meta=meta,
            after=after,
            # Joins cost a worker next to nothing, and release work: they go first.
            at_front=True,
            description=f"wait for {len(after)} jobs",
        ).id

    def funnel(self, ids: list[str], stage: str, meta: dict[str, Any]) -> list[str]:
        """ids, or joins that wait on them in a tree, so that a job waiting on the
        result waits on FAN_IN jobs at most."""
        level = 0
        while len(ids) > FAN_IN:
            level += 1
            ids = [
                self._join(ids[i : i + FAN_IN], f"{stage}-{level}-{i // FAN_IN}", meta)
                for i in range(0, len(ids), FAN_IN)
            ]
        return ids

    def spread(
        self, ids: list[str], count: int, stage: str, meta: dict[str, Any]
    ) -> list[list[str]]:
        """What each of count jobs waits on: ids, or joins that wait on them in a tree,
        so that no job has more than FAN_OUT of the count jobs or joins as dependents."""
        if count <= FAN_OUT or not ids:
            return [ids] * count
        joins = -(-count // FAN_OUT)
        above = self.spread(ids, joins, stage + "-up", meta)
        below = [self._join(wait, f"{stage}-{i}", meta) for i, wait in enumerate(above)]
        return [[below[i // FAN_OUT]] for i in range(count)]

    def write(self, own: list[str]) -> None:
        """Write the jobs, over whatever earlier jobs of the ids in own left."""
        q, redis = self.q, self.q.connection
        purge_found(q, own)
        ids = {job.id for job in self.jobs}
        deferred, watched, first = [], [], []
        for job in self.jobs:
            if not job._dependency_ids:
                first.append(job)
            elif ids.issuperset(job._dependency_ids):
                deferred.append(job)
            else:
                watched.append(job)
        for start in range(0, len(deferred), WRITE_BATCH):
            with redis.pipeline(transaction=False) as pipe:
                pipe.sadd(q.redis_queues_keys, q.key)
                for job in deferred[start : start + WRITE_BATCH]:
                    # As RQ's Queue.setup_dependencies writes a job that must wait.
                    job.origin = q.name
                    job._status = JobStatus.DEFERRED  # saved with the job's hash below
                    job.register_dependency(pipeline=pipe)
                    job.save(pipeline=pipe)
                    job.cleanup(ttl=job.ttl, pipeline=pipe)
                pipe.execute()
        for job in watched:
            q.enqueue_job(job)
        for start in range(0, len(first), WRITE_BATCH):
            with redis.pipeline() as pipe:
                for job in first[start : start + WRITE_BATCH]:
                    q.enqueue_job(job, pipeline=pipe)
                pipe.execute()


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
    if not worth_surveying(settings, q, engine):
        return None
    found = survey(settings, q, engine)
    if not found.dead and not found.stuck and found.stale_plan is None:
        return None
    return enqueue_import(settings, redis, engine, "", [])
