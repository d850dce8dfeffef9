"""Where an import stands: revisions, rows, rate and ETA, and the queue's jobs."""

from __future__ import annotations

import datetime as dt
from typing import Any

from redis import Redis
from sqlalchemy import Engine, func, select

from kmdb import indexes, schema
from kmdb.parts import progress
from kmdb.queues import queue
from kmdb.run import summary
from kmdb.schedule import live_jobs
from kmdb.settings import Settings

ERRORS_SHOWN = 5


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


def jobs_report(settings: Settings, redis: Redis, engine: Engine) -> dict[str, Any]:
    """The queue's jobs by state, with the last failures in one line each."""
    q = queue(settings, redis)
    active, dead = live_jobs(q, engine)
    states: dict[str, int] = {}
    for job in active:
        state = str(job.get_status(refresh=False).value)
        states[state] = states.get(state, 0) + 1
    failed_ids = q.failed_job_registry.get_job_ids()
    errors = []
    for job_id in failed_ids[-ERRORS_SHOWN:]:
        job = q.fetch_job(job_id)
        if job is None:
            continue
        lines = (job.exc_info or "").strip().splitlines()
        errors.append({"job": job_id, "error": lines[-1] if lines else "unknown error"})
    return {
        "queue": settings.queue,
        "queued": states.get("queued", 0),
        "started": states.get("started", 0),
        "deferred": states.get("deferred", 0),
        "scheduled": states.get("scheduled", 0),
        "failed": len(failed_ids),
        "dead": [job.id for job in dead],
        "errors": errors,
    }


def report(settings: Settings, engine: Engine, redis: Redis | None) -> dict[str, Any]:
    """Everything kmdb-status shows."""
    with engine.connect() as conn:
        pending_aliases = conn.execute(
            select(func.count()).select_from(schema.alias_sightings)
        ).scalar_one()
        put_off = [str(ix.name) for lacking in indexes.missing(conn).values() for ix in lacking]
    return {
        "revisions": revisions_report(engine),
        "rows": {**vars(summary(engine)), "aliases_to_settle": pending_aliases},
        "indexes_put_off": put_off,
        "jobs": jobs_report(settings, redis, engine) if redis is not None else None,
    }


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
        f"{rows['aliases']:,} aliases, {rows['people']:,} people, {rows['rejected']:,} rejected lines",
    ]
    if rows["aliases_to_settle"]:
        out.append(f"Aliases waiting for the settle step: {rows['aliases_to_settle']:,}")
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
    if jobs is None:
        out.append("Jobs: Redis not reachable")
        return out
    out.append(
        f"Jobs on queue {jobs['queue']!r}: {jobs['queued']} queued, {jobs['started']} started, "
        f"{jobs['deferred']} deferred, {jobs['scheduled']} scheduled, {jobs['failed']} failed"
    )
    if jobs["dead"]:
        out.append(
            f"Jobs of workers that died: {', '.join(jobs['dead'])} (kmdb-import plans them again)"
        )
    for error in jobs["errors"]:
        out.append(f"  {error['job']}: {error['error']}")
    return out
