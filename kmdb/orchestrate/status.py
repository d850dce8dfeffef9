"""Where an import stands: revisions, rows, rate and ETA, and the queue's jobs."""

from __future__ import annotations

import datetime as dt
from typing import Any

from redis import Redis
from rq.job import Job
from sqlalchemy import Connection, Engine, Table, exists, func, select, text
from sqlalchemy.exc import DBAPIError

from kmdb.load import indexes, schema
from kmdb.load.engine import is_mysql
from kmdb.load.ledger import progress
from kmdb.orchestrate.liveness import live_jobs
from kmdb.orchestrate.queues import queue
from kmdb.settings import Settings

ERRORS_SHOWN = 5
# A count of a big table's rows takes seconds while workers load it (InnoDB counts
# row by row); past this many milliseconds the table's statistics are shown instead.
COUNT_BUDGET_MS = 200
# MariaDB's and MySQL's errors for a statement stopped by its time limit.
TIME_LIMIT_ERRORS = (1969, 3024)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def revisions_report(engine: Engine) -> dict[str, Any]:
    """Counts of revisions by state, bytes and lines, and the running import's rate and ETA."""
    r = schema.revisions
    with engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(select(r))]
        read = progress(conn)
    for row in rows:
        # Parts report each chunk; the revision's own totals only when a part ends.
        row["lines_done"], row["bytes_done"] = read.get(
            row["number"], (row["lines_done"], row["bytes_done"])
        )
    by_status: dict[str, int] = {}
    for row in rows:
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
    unfinished = [row for row in rows if row["status"] != "done"]
    report: dict[str, Any] = {
        "known": len(rows),
        "imported": by_status.get("done", 0),
        "in_progress": by_status.get("running", 0),
        "failed": by_status.get("failed", 0),
        "stopped": by_status.get("stopped", 0),
        "pending": by_status.get("pending", 0),
        "lines": sum(row["lines_done"] for row in rows),
        "bytes_done": sum(row["bytes_done"] for row in rows),
        "bytes_total": sum(row["size"] or 0 for row in rows),
        "rate_bytes_per_second": None,
        "rate_lines_per_second": None,
        "eta_seconds": None,
    }
    running = by_status.get("running", 0)
    if running:
        # Each revision's own pace (bytes over its import time), times the revisions
        # running side by side: a fair rate however many workers there are.
        now = _now()
        recent = [
            row
            for row in rows
            if row["started_at"]
            and (
                row["status"] == "running"
                or (row["finished_at"] and now - row["finished_at"] < dt.timedelta(days=1))
            )
        ]
        seconds = sum(
            max(((row["finished_at"] or now) - row["started_at"]).total_seconds(), 0.0)
            for row in recent
        )
        if seconds > 0:
            report["rate_bytes_per_second"] = (
                running * sum(r["bytes_done"] for r in recent) / seconds
            )
            report["rate_lines_per_second"] = (
                running * sum(r["lines_done"] for r in recent) / seconds
            )
            left = sum(max((row["size"] or 0) - row["bytes_done"], 0) for row in unfinished)
            if report["rate_bytes_per_second"]:
                report["eta_seconds"] = left / report["rate_bytes_per_second"]
    return report


def jobs_report(
    settings: Settings, redis: Redis, engine: Engine, settled: bool = False
) -> dict[str, Any]:
    """The queue's jobs by state, with the current failures in one line each.

    A failed job whose work was planned again and is done since (its revisions
    scanned, its parts imported; for a settle, nothing left to settle) is no
    current failure: it is counted apart, as `redone`, and not shown.
    """
    q = queue(settings, redis)
    active, dead = live_jobs(q, engine)
    states: dict[str, int] = {}
    # Joins (no-op jobs between stages of many jobs, kmdb.orchestrate.graph) are no work
    # of the user's: not counted. One whose worker died is, as any job whose worker died.
    for job in active:
        if _is_join(job):
            continue
        state = str(job.get_status(refresh=False).value)
        states[state] = states.get(state, 0) + 1
    failed_ids = q.failed_job_registry.get_job_ids()
    failed = [
        j for j in Job.fetch_many(failed_ids, connection=redis) if j is not None and not _is_join(j)
    ]
    current = _current_failures(engine, failed, settled)
    errors = []
    for job in current[-ERRORS_SHOWN:]:
        lines = (job.exc_info or "").strip().splitlines()
        errors.append({"job": job.id, "error": lines[-1] if lines else "unknown error"})
    return {
        "queue": settings.queue,
        "queued": states.get("queued", 0),
        "started": states.get("started", 0),
        "deferred": states.get("deferred", 0),
        "scheduled": states.get("scheduled", 0),
        "failed": len(current),
        "redone": len(failed) - len(current),
        "dead": [job.id for job in dead],
        "errors": errors,
    }


def _is_join(job: Job) -> bool:
    return (job.meta or {}).get("kmdb") == "join"


def _current_failures(engine: Engine, failed: list[Job], settled: bool) -> list[Job]:
    """The failed jobs whose work is still not done, in the registry's order."""
    if not failed:
        return []  # the usual case: no need to read every revision's and part's state
    r, p = schema.revisions, schema.revision_parts
    with engine.connect() as conn:
        revisions: dict[int, tuple[str, bool]] = {
            n: (status, scanned)
            for n, status, scanned in conn.execute(select(r.c.number, r.c.status, r.c.scanned))
        }
        parts = {
            (n, part): status
            for n, part, status in conn.execute(select(p.c.revision, p.c.part, p.c.status))
        }

    def done(revision: int) -> bool:
        return revisions.get(revision, ("", False))[0] == "done"

    def still_failing(job: Job) -> bool:
        meta = job.meta or {}
        kind = meta.get("kmdb")
        if kind == "scan":
            wanted = meta.get("revisions") or [meta.get("revision")]
            return any(not done(n) and not revisions.get(n, ("", False))[1] for n in wanted)
        if kind == "import":
            units = meta.get("parts") or [[meta.get("revision"), meta.get("part")]]
            return any(
                not done(n) and (part is None or parts.get((n, part)) != "done")
                for n, part in units
            )
        if kind == "settle":
            return not settled
        return True

    return [job for job in failed if still_failing(job)]


def rows_report(engine: Engine) -> dict[str, Any]:
    """Rows imported, from cheap sources that wait for no import's locks.

    Events, properties and rejected lines come from the progress ledger, which each
    chunk updates in its own transaction (so it equals the tables). People, aliases
    and sightings are counted exactly when that is quick, else estimated from the
    table statistics: then `estimated` names them.
    """
    p, r = schema.revision_parts, schema.revisions
    with engine.connect() as conn:
        from_parts = conn.execute(
            select(
                func.coalesce(func.sum(p.c.events), 0),
                func.coalesce(func.sum(p.c.properties), 0),
                func.coalesce(func.sum(p.c.rejected), 0),
            )
        ).one()
        # Revisions imported by builds that kept no parts hold their own totals.
        from_revisions = conn.execute(
            select(
                func.coalesce(func.sum(r.c.events), 0),
                func.coalesce(func.sum(r.c.properties), 0),
                func.coalesce(func.sum(r.c.rejected), 0),
            ).where(~exists().where(p.c.revision == r.c.number))
        ).one()
        done = conn.execute(
            select(func.count(), func.coalesce(func.sum(r.c.lines_done), 0)).where(
                r.c.status == "done"
            )
        ).one()
        estimated: list[str] = []
        people = _quick_count(conn, schema.users, estimated, schema.users.c.canonical_id.is_(None))
        aliases = _quick_count(conn, schema.aliases, estimated)
        sightings = _quick_count(conn, schema.alias_sightings, estimated)
        repoint = conn.execute(select(func.count()).select_from(schema.repoint_state)).scalar()
    events, properties, rejected = (
        int(a) + int(b) for a, b in zip(from_parts, from_revisions, strict=True)
    )
    return {
        "revisions": int(done[0]),
        "lines": int(done[1]),
        "events": events,
        "properties": properties,
        "people": people,
        "aliases": aliases,
        "rejected": rejected,
        "aliases_to_settle": sightings,
        "rows_to_repoint": bool(repoint),
        "estimated": estimated,
    }


def _quick_count(conn: Connection, table: Table, estimated: list[str], *where: Any) -> int | None:
    """The table's rows (matching where) if counted within COUNT_BUDGET_MS, else an estimate.

    The estimate is the table's statistics (None when the count has a condition);
    the table's name is then added to estimated.
    """
    query = select(func.count()).select_from(table).where(*where)
    if not is_mysql(conn.engine):
        return int(conn.execute(query).scalar_one())
    sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
    if getattr(conn.dialect, "is_mariadb", False):
        limited = f"SET STATEMENT max_statement_time={COUNT_BUDGET_MS / 1000} FOR {sql}"
    else:
        limited = sql.replace("SELECT", f"SELECT /*+ MAX_EXECUTION_TIME({COUNT_BUDGET_MS}) */", 1)
    try:
        return int(conn.exec_driver_sql(limited).scalar_one())
    except DBAPIError as exc:
        code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
        if code not in TIME_LIMIT_ERRORS:
            raise
    estimated.append(table.name)
    if where:
        return None
    rows = conn.execute(
        text(
            "SELECT TABLE_ROWS FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t"
        ),
        {"t": table.name},
    ).scalar()
    return int(rows or 0)


def report(settings: Settings, engine: Engine, redis: Redis | None) -> dict[str, Any]:
    """Everything kmdb-status shows; cheap to call while workers import."""
    with engine.connect() as conn:
        put_off = [str(ix.name) for lacking in indexes.missing(conn).values() for ix in lacking]
    rows = rows_report(engine)
    return {
        "revisions": revisions_report(engine),
        "rows": rows,
        "indexes_put_off": put_off,
        "jobs": jobs_report(
            settings,
            redis,
            engine,
            settled=not rows["aliases_to_settle"] and not rows["rows_to_repoint"] and not put_off,
        )
        if redis is not None
        else None,
    }


def _number(count: int | None) -> str:
    return "?" if count is None else f"{count:,}"


def _duration(seconds: float) -> str:
    return str(dt.timedelta(seconds=round(seconds)))


def render(data: dict[str, Any]) -> list[str]:
    """The report as lines of text."""
    rev, rows, jobs = data["revisions"], data["rows"], data["jobs"]
    out = [
        f"Revisions: {rev['known']} known, {rev['imported']} imported, {rev['in_progress']} in "
        f"progress, {rev['failed']} failed, {rev['stopped']} stopped, {rev['pending']} pending",
        f"Read: {rev['lines']:,} lines, {rev['bytes_done'] / 1e6:,.1f} of "
        f"{rev['bytes_total'] / 1e6:,.1f} MB",
        f"Rows: {rows['events']:,} events, {rows['properties']:,} properties, "
        f"{_number(rows['aliases'])} aliases, {_number(rows['people'])} people, "
        f"{rows['rejected']:,} rejected lines",
    ]
    if rows["aliases_to_settle"]:
        out.append(f"Aliases waiting for the settle step: {rows['aliases_to_settle']:,}")
    if rows.get("rows_to_repoint"):
        out.append(
            "Older rows of people that the last settle changed wait to be re-pointed "
            "(by the re-point job beside the import, or the next settle)."
        )
    if rows.get("estimated"):
        out.append(
            "Estimated from the table statistics while the database is busy: "
            + ", ".join(rows["estimated"])
        )
    if data["indexes_put_off"]:
        out.append(
            "Indexes built when the import ends (queries by person or name are slow until then): "
            + ", ".join(data["indexes_put_off"])
        )
    if rev["rate_lines_per_second"] is not None:
        eta = _duration(rev["eta_seconds"]) if rev["eta_seconds"] is not None else "unknown"
        out.append(
            f"Rate: {rev['rate_lines_per_second']:,.0f} lines/s, "
            f"{rev['rate_bytes_per_second'] / 1e6:,.1f} MB/s; ETA {eta}"
        )
    if rev["stopped"] and not rev["in_progress"]:
        out.append("Stopped on request: kmdb-work (or kmdb-pool) goes on from where it stopped.")
    if jobs is None:
        out.append("Jobs: Redis not reachable")
        return out
    out.append(
        f"Jobs on queue {jobs['queue']!r}: {jobs['queued']} queued, {jobs['started']} started, "
        f"{jobs['deferred']} deferred, {jobs['scheduled']} scheduled, {jobs['failed']} failed"
        + (f" ({jobs['redone']} earlier failures since redone)" if jobs.get("redone") else "")
    )
    if jobs["dead"]:
        out.append(
            f"Jobs of workers that died: {', '.join(jobs['dead'])} (kmdb-import plans them again)"
        )
    for error in jobs["errors"]:
        out.append(f"  {error['job']}: {error['error']}")
    return out
