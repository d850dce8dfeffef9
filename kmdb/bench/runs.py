"""One import of the benchmark's export (through RQ workers, or inline) and its checks."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kmdb.bench.commands import check_call, command, environment, say, tail
from kmdb.bench.measure import RssSampler, children_cpu, cpu_seconds, own_cpu
from kmdb.bench.server import MySQL
from kmdb.errors import BenchError
from kmdb.load import schema


@dataclass
class Run:
    """The figures of one import."""

    label: str
    seconds: float
    counts: dict[str, int]
    workers: int = 0
    enqueue: float = 0.0
    # Per worker: the highest VmHWM of the worker or any of its work horses, polled.
    rss_kib: list[int] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    import_jobs: float = 0.0
    scan: float = 0.0
    settles: list[float] = field(default_factory=list)
    parts: int = 0
    jobs_of: dict[str, int] = field(default_factory=dict)  # finished jobs by kind
    # CPU seconds used during the run: "server" (mysqld), "workers" (with their work horses),
    # "import" (kmdb-import) and "s3" (this process, which hosts moto's server).
    cpu: dict[str, float] = field(default_factory=dict)
    # (start, end, worker, job) in seconds from the start of kmdb-import, for --timeline.
    timeline: list[tuple[float, float, str, str]] = field(default_factory=list)
    # The reload it is compared with: that of its own round (see --repeat).
    baseline: float | None = None
    # The best bulk path of its round: its rows loaded without secondary indexes, then indexed.
    best: float | None = None
    round: int = 1
    # Redis commands (INFO commandstats calls) from kmdb-import to the last worker's exit.
    redis_calls: int = 0


COUNTS = {
    "events": "SELECT COUNT(*) FROM events",
    "properties": "SELECT COUNT(*) FROM properties",
    "users": "SELECT COUNT(*) FROM users",
    "people": "SELECT COUNT(*) FROM users WHERE canonical_id IS NULL",
    "keys": "SELECT COUNT(*) FROM `keys`",
    "aliases": "SELECT COUNT(*) FROM aliases",
    "rejected": "SELECT COUNT(*) FROM rejected_lines",
    "revisions": "SELECT COUNT(*) FROM revisions",
    "revisions_done": "SELECT COUNT(*) FROM revisions WHERE status = 'done'",
    "lines_done": "SELECT COALESCE(SUM(lines_done), 0) FROM revisions",
}
# The import must leave the indexes it put off built, or the comparison is unfair.
MYSQL_INDEXES = (
    "SELECT COUNT(DISTINCT table_name, index_name) FROM information_schema.statistics "
    "WHERE table_schema = DATABASE() AND table_name IN ('events', 'properties') "
    "AND index_name <> 'PRIMARY'"
)
SQLITE_INDEXES = (
    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' "
    "AND tbl_name IN ('events', 'properties') AND name NOT LIKE 'sqlite_autoindex%'"
)


def table_counts(mysql: MySQL | None, database: str | None, sqlite: Path | None) -> dict[str, int]:
    """The rows of each table, the revisions done and the secondary indexes built."""
    if sqlite is not None:
        queries = {**COUNTS, "indexes": SQLITE_INDEXES}
        conn = sqlite3.connect(sqlite)
        try:
            return {
                name: int(conn.execute(q.replace("`", '"')).fetchone()[0])
                for name, q in queries.items()
            }
        finally:
            conn.close()
    assert mysql is not None
    queries = {**COUNTS, "indexes": MYSQL_INDEXES}
    return mysql.counts(database, queries)


def check_complete(label: str, counts: dict[str, int], revisions: int, lines: int) -> None:
    """BenchError unless every revision and line is done, none rejected, every index built."""
    problems = []
    if counts["revisions_done"] != revisions or counts["revisions"] != revisions:
        problems.append(
            f"{counts['revisions_done']} of {revisions} revisions done "
            f"({counts['revisions']} recorded)"
        )
    if counts["lines_done"] != lines:
        problems.append(f"{counts['lines_done']:,} of {lines:,} lines done")
    if counts["rejected"]:
        problems.append(f"{counts['rejected']} lines rejected from a clean export")
    wanted = len(schema.events.indexes) + len(schema.properties.indexes)
    if counts["indexes"] != wanted:
        problems.append(f"{counts['indexes']} of the {wanted} indexes of events and properties")
    if problems:
        raise BenchError(f"{label}: the import is incomplete: {'; '.join(problems)}.")


def redis_calls(redis: Any) -> int:
    """The commands the Redis server has run since its start (INFO commandstats), this one's included."""
    return sum(int(stat["calls"]) for stat in redis.info("commandstats").values()) + 1


def run_workers(
    w: int,
    args: argparse.Namespace,
    mysql: MySQL,
    base_env: dict[str, str],
    ctx: dict[str, Any],
    tag: str | None = None,
    into: str | None = None,
) -> tuple[Run, str]:
    """Import the bucket with w burst workers; return the run and the database.

    Into a fresh database named after tag (default wW), flushed first; with into,
    into that database as it is (a later revision on top of earlier ones).
    """
    from redis import Redis

    from kmdb.orchestrate import queues
    from kmdb.settings import Settings

    tmp: Path = ctx["tmp"]
    tag = tag or f"w{w}"
    database = into or f"{ctx['prefix']}_{tag}"
    queue = f"{ctx['prefix']}-{tag}"
    url = mysql.url_of(database) if into else mysql.create(database)
    env = environment(
        base_env,
        DATABASE_URL=url,
        KMDB_QUEUE=queue,
        KMDB_TMP_DIR=str(tmp / f"work-{tag}"),
    )
    log = tmp / f"{tag}.log"
    redis = Redis.from_url(args.redis_url)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if not into:
            check_call(command("flush"), env, tmp, log)
        say(f"W={w}: kmdb-import, then {w} kmdb-work --burst")
        calls = redis_calls(redis)
        server_cpu, own_cpu_before = cpu_seconds(ctx["server_pid"]), own_cpu()
        import_cpu = children_cpu()
        started, wall_started = time.perf_counter(), time.time()
        check_call([*command("import"), "--source", f"s3://{ctx['bucket']}"], env, tmp, log)
        enqueued = time.perf_counter()
        import_cpu = children_cpu() - import_cpu
        logs = [open(tmp / f"{tag}-worker{i + 1}.log", "wb") for i in range(w)]  # noqa: SIM115
        try:
            for out in logs:
                procs.append(
                    subprocess.Popen(
                        [*command("work"), "--burst"],
                        env=env,
                        cwd=tmp,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        finally:
            for out in logs:
                out.close()
        sampler = RssSampler([p.pid for p in procs])
        sampler.start()
        ended = _reap(procs)
        calls = redis_calls(redis) - calls - 1
        sampler.stopping.set()
        sampler.join()
        seconds = max(end for end, _, _ in ended.values()) - started
        cpu = {
            "server": cpu_seconds(ctx["server_pid"]) - server_cpu,
            "workers": sum(used for _, _, used in ended.values()),
            "import": import_cpu,
            "s3": own_cpu() - own_cpu_before,
        }
        _check_no_failed_jobs(w, redis, queue)
        codes = [ended[p.pid][1] for p in procs]
        if any(codes):
            raise BenchError(f"W={w}: workers exited with {codes}:\n{tail(log)}")
        counts = table_counts(mysql, database, None)
        check_complete(f"W={w}", counts, ctx["revisions"], ctx["lines"])

        run = Run(
            label=f"W={w}",
            seconds=seconds,
            counts=counts,
            workers=w,
            enqueue=enqueued - started,
            rss_kib=[sampler.peak_kib(p.pid) for p in procs],
            cpu=cpu,
            redis_calls=calls,
        )
        _add_jobs(run, redis, queue, wall_started)
        run.parts = mysql.counts(database, {"parts": "SELECT COUNT(*) FROM revision_parts"})[
            "parts"
        ]
        # Two settles and the re-point job beside the imports (meta kmdb="settle" too).
        if run.jobs_of.get("settle") != 3:
            say(f"W={w}: note: {run.jobs_of.get('settle', 0)} settle jobs, expected 3")
        return run, database
    except BaseException:
        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()
        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ChildProcessError):
                    p.wait(timeout=30)
        raise
    finally:
        with contextlib.suppress(Exception):
            queues.clear(Settings(redis_url=args.redis_url, queue=queue), redis)


def _reap(procs: list[subprocess.Popen[bytes]]) -> dict[int, tuple[float, int, float]]:
    """Wait for every process; (when it ended, its exit status, its CPU seconds) by pid."""
    ended: dict[int, tuple[float, int, float]] = {}

    def reap(proc: subprocess.Popen[bytes]) -> None:
        # wait4 gives the worker's CPU time, its reaped work horses' included.
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        ended[proc.pid] = (
            time.perf_counter(),
            proc.returncode,
            usage.ru_utime + usage.ru_stime,
        )

    reapers = [threading.Thread(target=reap, args=(p,), daemon=True) for p in procs]
    for t in reapers:
        t.start()
    for t in reapers:
        t.join()
    return ended


def _check_no_failed_jobs(w: int, redis: Any, queue: str) -> None:
    """BenchError naming each failed job of the queue and its last line of error."""
    from rq import Queue
    from rq.job import Job

    failed = Queue(queue, connection=redis).failed_job_registry.get_job_ids()
    if failed:
        reasons = []
        for job in Job.fetch_many(failed, connection=redis):
            if job is not None:
                result = job.latest_result()
                text = (result.exc_string if result else "") or ""
                reasons.append(f"{job.id}: {text.strip().splitlines()[-1:] or '?'}")
        raise BenchError(f"W={w}: {len(failed)} jobs failed: {'; '.join(reasons)}")


def _add_jobs(run: Run, redis: Any, queue: str, wall_started: float) -> None:
    """The finished jobs' kinds, times and import stages, added to run."""
    from rq import Queue
    from rq.job import Job

    q = Queue(queue, connection=redis)
    settles: list[tuple[float, float]] = []
    for job in Job.fetch_many(q.finished_job_registry.get_job_ids(), connection=redis):
        if job is None:
            continue
        if job.started_at and job.ended_at:
            run.timeline.append(
                (
                    job.started_at.timestamp() - wall_started,
                    job.ended_at.timestamp() - wall_started,
                    job.worker_name or "?",
                    job.description or job.id,
                )
            )
        took = (
            (job.ended_at - job.started_at).total_seconds()
            if job.started_at and job.ended_at
            else 0.0
        )
        kind = str((job.meta or {}).get("kmdb"))
        run.jobs_of[kind] = run.jobs_of.get(kind, 0) + 1
        if kind == "import":
            run.import_jobs += took
            value = job.return_value() or {}
            for stage, secs in (value.get("timings") or {}).items():
                run.stages[stage] = run.stages.get(stage, 0.0) + float(secs)
        elif kind == "scan":
            run.scan += took
        elif kind == "settle":
            settles.append((job.started_at.timestamp() if job.started_at else 0.0, took))
    # In the order they ran: before the import, the re-point beside it, after it.
    run.settles = [took for _, took in sorted(settles)]


def run_inline(
    kind: str, args: argparse.Namespace, mysql: MySQL, base_env: dict[str, str], ctx: dict[str, Any]
) -> Run:
    """Time kmdb-import --inline from the local folder into a fresh SQLite file or MariaDB database."""
    tmp: Path = ctx["tmp"]
    database = sqlite = None
    if kind == "sqlite":
        sqlite = tmp / "inline.sqlite3"
        url = f"sqlite:///{sqlite}"
    else:
        database = f"{ctx['prefix']}_inline"
        url = mysql.create(database)
    queue = f"{ctx['prefix']}-inline-{kind}"
    env = environment(
        base_env, DATABASE_URL=url, KMDB_QUEUE=queue, KMDB_TMP_DIR=str(tmp / f"inline-{kind}")
    )
    log = tmp / f"inline-{kind}.log"
    try:
        check_call(command("flush"), env, tmp, log)
        say(f"inline {kind}: kmdb-import --inline")
        started = time.perf_counter()
        check_call([*command("import"), "--inline", "--source", str(ctx["export"])], env, tmp, log)
        seconds = time.perf_counter() - started
        counts = table_counts(mysql, database, sqlite)
        check_complete(f"inline {kind}", counts, ctx["revisions"], ctx["lines"])
        return Run(label=f"inline {kind}", seconds=seconds, counts=counts)
    finally:
        if database:
            mysql.drop(database)
        if sqlite and not args.keep:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{sqlite}{suffix}").unlink(missing_ok=True)


def join_revisions(folder: Path) -> None:
    """Make one revision file, 1.json, of all the generated ones (to check memory on a big file)."""
    files = sorted(folder.glob("*.json"), key=lambda f: int(f.stem))
    joined = folder / "joined.tmp"
    with open(joined, "wb") as out:
        for f in files:
            with open(f, "rb") as part:
                shutil.copyfileobj(part, out, 1 << 20)
            f.unlink()
    joined.rename(folder / "1.json")
