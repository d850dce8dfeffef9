"""The scale benchmark's many-jobs table: one export imported at part sizes that make more
and more jobs, each run's wall time, Redis commands per job and rows against the first's."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kmdb.bench import s3
from kmdb.bench.commands import command, environment, say
from kmdb.bench.report import compare_counts
from kmdb.bench.runs import Run, run_workers
from kmdb.bench.server import MySQL
from kmdb.errors import BenchError

REVISION_FILES = 8


def part_sizes(export: Path, jobs: list[int]) -> list[int]:
    """KMDB_PART_SIZE values that cut the export's revision files into about each count of jobs."""
    sizes = [f.stat().st_size for f in (export / "revisions").iterdir()]
    return [-(-max(sizes) // max(1, -(-n // len(sizes)))) for n in jobs]


def many_jobs(args: argparse.Namespace, mysql: MySQL, ctx: dict[str, Any]) -> list[Run]:
    """The many-jobs runs; the first one's database is kept for the bulk path."""
    from kmdb.sample import write_sample

    export = ctx["tmp"] / "export"
    per = -(-args.lines // REVISION_FILES)
    stats = write_sample(export, args.lines, seed=args.seed, lines_per_revision=per, bad_every=0)
    ctx.update(revisions=stats.revisions, lines=stats.lines, bucket=ctx["prefix"].replace("_", "-"))
    ctx["mb"] = sum(f.stat().st_size for f in (export / "revisions").iterdir()) / 2**20
    s3.upload_export(export, ctx["bucket"], s3=ctx["client"])
    ctx["buckets"].append(ctx["bucket"])
    runs = []
    for i, size in enumerate(args.part_sizes or part_sizes(export, args.jobs)):
        env = {**ctx["base_env"], "KMDB_PART_SIZE": str(size)}
        run, database = run_workers(args.workers, args, mysql, env, ctx, f"jobs{i}")
        run.label = f"part size {size:,}"
        runs.append(run)
        say(f"part size {size:,}: {sum(run.jobs_of.values())} jobs, {run.seconds:.1f} s")
        if i == 0:
            ctx["first_database"] = database
        else:
            mysql.drop(database)
    most = max(sum(run.jobs_of.values()) for run in runs)
    ctx["rq_alone"] = (most, rq_alone(args, mysql.url_of(ctx["first_database"]), ctx, most))
    say(f"RQ alone: {most:,} no-op jobs, {ctx['rq_alone'][1]:.1f} s")
    return runs


def rq_alone(args: argparse.Namespace, database_url: str, ctx: dict[str, Any], jobs: int) -> float:
    """Seconds that `jobs` no-op jobs take on the run's burst workers: what RQ itself costs
    per job (dequeue, status, result, heartbeat), below which no import of that many
    jobs can go. They are enqueued at once, with no graph, before the workers start."""
    import subprocess
    import time

    from kmdb.orchestrate import queues
    from kmdb.settings import Settings

    settings = Settings(redis_url=args.redis_url, queue=f"{ctx['prefix']}-rq-alone")
    redis = queues.connect(settings)
    q = queues.queue(settings, redis)
    with redis.pipeline() as pipe:
        for _ in range(jobs):
            q.enqueue("kmdb.orchestrate.jobs.join_job", pipeline=pipe)
        pipe.execute()
    env = environment(ctx["base_env"], DATABASE_URL=database_url, KMDB_QUEUE=settings.queue)
    started = time.perf_counter()
    with open(ctx["tmp"] / "rq-alone.log", "wb") as log:
        procs = [
            subprocess.Popen(
                [*command("work"), "--burst"], env=env, cwd=ctx["tmp"], stdout=log, stderr=log
            )
            for _ in range(args.workers)
        ]
        codes = [p.wait() for p in procs]
    seconds = time.perf_counter() - started
    queues.clear(settings, redis)
    if any(codes):
        raise BenchError(f"kmdb-work failed on no-op jobs; see {ctx['tmp'] / 'rq-alone.log'}.")
    return seconds


def print_jobs(args: argparse.Namespace, runs: list[Run], ctx: dict[str, Any], out: Any) -> None:
    """The many-jobs table."""
    p = print
    p(
        f"\nMany jobs: {ctx['lines']:,} lines in {ctx['revisions']} revision files "
        f"({ctx['mb']:.1f} MB), {args.workers} kmdb-work --burst",
        file=out,
    )
    p(
        f"{'part size':>11} {'import jobs':>12} {'jobs':>6} {'wall s':>8} {'ratio':>7} "
        f"{'Redis cmds/job':>15} {'rows':>5}",
        file=out,
    )
    first = runs[0]
    for r in runs:
        jobs = sum(r.jobs_of.values())
        same = "first" if r is first else ("same" if not compare_counts([first, r]) else "DIFF")
        p(
            f"{int(r.label.split()[-1].replace(',', '')):>11,} {r.jobs_of.get('import', 0):>12,} "
            f"{jobs:>6,} {r.seconds:>8.1f} {r.seconds / first.seconds:>6.2f}x "
            f"{r.redis_calls / max(jobs, 1):>15,.0f} {same:>5}",
            file=out,
        )
    p(
        "  jobs: every job RQ ran (scans, imports, settles); ratio: wall time / the first run's",
        file=out,
    )
    if "rq_alone" in ctx:
        jobs, seconds = ctx["rq_alone"]
        p(
            f"  RQ alone: {jobs:,} no-op jobs on the same workers take {seconds:.1f} s "
            f"({seconds * args.workers / max(jobs, 1) * 1000:.1f} ms per job and worker)",
            file=out,
        )
    p("  (targets: 1,300 jobs within 1.5x of 8 jobs, at most 100 Redis commands per job)", file=out)
