"""bin/bench: kmdb's import against MariaDB's own bulk load of the same final rows.

Writes a clean synthetic export, serves it from moto's S3 server, and for each
worker count W runs `kmdb-import --source s3://BUCKET` then W `kmdb-work --burst`
side by side into a fresh MariaDB database. The yardstick is the reload: the
final tables (events, properties, users, keys, aliases) dumped to TSV and loaded
back into the same emptied tables with LOAD DATA LOCAL INFILE, on the same
server in the same run. With --inline it also times `kmdb-import --inline` into
SQLite and MariaDB. It prints figures and the issue's targets; it never fails
on a slow run, only (exit 1) on an incomplete or inconsistent import.

Usage (from the repository):

    bin/bench                                   # 1,000,000 lines, W = 1 and 2
    bin/bench --lines 100000 --workers 1,2 --inline

KMDB_BATCH_SIZE and KMDB_PART_SIZE, if set, are passed on to kmdb's commands;
every other kmdb setting is the benchmark's own. Server-wide MariaDB settings are never changed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kmdb.bench import s3
from kmdb.bench.commands import PASSED_ON, say
from kmdb.bench.measure import server_pid
from kmdb.bench.reload import bulk_path, reload
from kmdb.bench.report import compare_counts, cpu_table, report, timelines
from kmdb.bench.runs import Run, join_revisions, run_inline, run_workers
from kmdb.bench.server import MySQL
from kmdb.errors import BenchError


def _worker_counts(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's options (argparse's usage error, exit 2, for bad ones)."""
    parser = argparse.ArgumentParser(
        prog="bin/bench",
        description="Time kmdb's import against a LOAD DATA reload of its own final rows.",
    )
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines in the export")
    parser.add_argument(
        "--workers",
        default="1,2",
        type=_worker_counts,
        help="worker counts to run, e.g. 1,2 (default 1,2)",
    )
    parser.add_argument(
        "--inline",
        action="store_true",
        help="also time kmdb-import --inline into SQLite and MariaDB",
    )
    parser.add_argument("--mysql-url", default="mysql+pymysql://root@127.0.0.1:3306")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--timeline", action="store_true", help="print when each job ran, on which worker"
    )
    parser.add_argument("--lines-per-revision", type=int, default=50_000)
    parser.add_argument(
        "--one-file",
        action="store_true",
        help="join the generated revisions into one revision file (e.g. 1 GB, to check memory)",
    )
    parser.add_argument(
        "--no-reload", action="store_true", help="skip the reload (for memory or speed alone)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of imports, each with its own reload; prints the median ratio "
        "(the machine's speed drifts from minute to minute)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat needs a number of rounds of at least 1, e.g. --repeat 3")
    if not args.workers or min(args.workers) < 1:
        parser.error("--workers needs worker counts of at least 1, e.g. --workers 1,2")
    return args


class _Results:
    """What a benchmark measured, for the summary printed at its end."""

    def __init__(self) -> None:
        self.runs: list[Run] = []
        self.inline: list[Run] = []
        self.baselines: list[float] = []  # one reload per round; the first is reported in full
        self.bulk: list[float] = []  # one best bulk path per round
        self.bulk_indexing = 0.0  # the first one's seconds building the indexes
        self.per_table: dict[str, tuple[int, float]] = {}
        self.reload_cpu = 0.0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every import was complete and all gave the same rows."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from kmdb.sample import write_sample

    mysql = MySQL(args.mysql_url)
    server_info = mysql.server()
    prefix = f"kmdb_bench_{secrets.token_hex(4)}"
    tmp = Path(tempfile.mkdtemp(prefix="kmdb-bench-"))
    export = tmp / "export"
    ctx: dict[str, Any] = {
        "tmp": tmp,
        "export": export,
        "prefix": prefix,
        "server_pid": server_pid(),
    }
    bucket = prefix.replace("_", "-")
    status = 0
    got = _Results()
    try:
        with contextlib.ExitStack() as cleanup:
            say(f"writing {args.lines:,} lines to {export}")
            started = time.perf_counter()
            stats = write_sample(
                export,
                args.lines,
                seed=args.seed,
                lines_per_revision=args.lines_per_revision,
                bad_every=0,
            )
            revisions = stats.revisions
            if args.one_file:
                join_revisions(export / "revisions")
                revisions = 1
            size = sum(f.stat().st_size for f in (export / "revisions").iterdir())
            ctx.update(revisions=revisions, lines=stats.lines)
            say(
                f"wrote {revisions} revisions, {size / 2**20:.1f} MB, in "
                f"{time.perf_counter() - started:.1f} s"
            )

            endpoint = cleanup.enter_context(s3.s3_server())
            client = s3.client(endpoint)
            s3.upload_export(export, bucket, s3=client)
            cleanup.callback(_quietly, s3.remove_bucket, client, bucket)
            ctx["bucket"] = bucket
            base_env = {**s3.aws_env(endpoint), "KMDB_REDIS_URL": args.redis_url}
            say(f"uploaded to s3://{bucket} on {endpoint}")
            _measure(args, mysql, base_env, ctx, got)
    except BenchError as exc:
        say(f"FAILED: {exc}")
        status = 1
    finally:
        for name in list(mysql.made):
            _quietly(mysql.drop, name)
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return _summary(args, ctx, server_info, got, sys.stdout) or status


def _quietly(action: Any, *args: Any) -> None:
    """Clean up, whatever fails: the run's own outcome is what the user needs to see."""
    with contextlib.suppress(Exception):
        action(*args)


def _measure(
    args: argparse.Namespace,
    mysql: MySQL,
    base_env: dict[str, str],
    ctx: dict[str, Any],
    got: _Results,
) -> None:
    """The rounds of imports with workers, each compared with a reload of its own, then inline."""
    for round_ in range(1, args.repeat + 1):
        # Each round's runs are compared with a reload of the same minutes.
        this_round: float | None = None
        best: float | None = None
        for w in args.workers:
            run, database = run_workers(w, args, mysql, base_env, ctx)
            run.round = round_
            got.runs.append(run)
            say(f"W={w}: {run.seconds:.1f} s")
            if this_round is None and not args.no_reload:
                say("dumping the final tables and reloading them with LOAD DATA LOCAL INFILE")
                this_round, tables, cpu = reload(
                    mysql, database, ctx["tmp"] / "dump", ctx["server_pid"]
                )
                if not got.baselines:
                    got.per_table, got.reload_cpu = tables, cpu
                got.baselines.append(this_round)
                say(f"reload: {this_round:.1f} s")
                say("loading them into a copy without secondary indexes, then indexing it")
                best, _tables, indexing = bulk_path(mysql, database, ctx["tmp"] / "dump")
                if not got.bulk:
                    got.bulk_indexing = indexing
                got.bulk.append(best)
                say(f"best bulk path: {best:.1f} s")
            mysql.drop(database)
        for run in got.runs:
            if run.round == round_:
                run.baseline, run.best = this_round, best
    if args.inline:
        for kind in ("sqlite", "mariadb"):
            got.inline.append(run_inline(kind, args, mysql, base_env, ctx))
            say(f"{got.inline[-1].label}: {got.inline[-1].seconds:.1f} s")


def _summary(
    args: argparse.Namespace, ctx: dict[str, Any], server_info: str, got: _Results, out: Any
) -> int:
    """Print what was measured; 1 if the runs' row counts differ, else 0."""
    runs, inline = got.runs, got.inline
    baseline = got.baselines[0] if got.baselines else None
    print(
        f"kmdb bench: {args.lines:,} lines in {ctx.get('revisions', '?')} revisions "
        f"(seed {args.seed}, {args.lines_per_revision:,} lines per revision), "
        f"{os.cpu_count()} cores",
        file=out,
    )
    print(f"Server: {server_info}", file=out)
    for name in PASSED_ON:
        if os.environ.get(name):
            print(f"{name}={os.environ[name]}", file=out)
    if runs:
        c = runs[0].counts
        print(
            f"Final rows: {c['events']:,} events, {c['properties']:,} properties, "
            f"{c['users']:,} users ({c['people']:,} people), {c['keys']:,} keys, "
            f"{c['aliases']:,} aliases; {runs[0].parts} revision parts in "
            f"{runs[0].jobs_of.get('import', 0)} import jobs and "
            f"{runs[0].jobs_of.get('scan', 0)} scan jobs",
            file=out,
        )
    if baseline is not None:
        parts = ", ".join(f"{t} {s:.1f}" for t, (_rows, s) in got.per_table.items())
        print(
            f"Reload (LOAD DATA LOCAL INFILE of the final rows into the emptied tables, "
            f"after the W={runs[0].workers} import): {baseline:.1f} s ({parts})",
            file=out,
        )
        if got.bulk:
            print(
                f"Best bulk path (the same rows loaded into a copy of the tables without "
                f"secondary indexes, then indexed): {got.bulk[0]:.1f} s "
                f"({got.bulk_indexing:.1f} s of it building the indexes)",
                file=out,
            )
        if len(got.baselines) > 1:
            print(
                f"Reloads of the later rounds: {', '.join(f'{b:.1f}' for b in got.baselines[1:])} s",
                file=out,
            )
    report(runs, inline, baseline, ctx.get("lines", args.lines), out)
    if runs and ctx.get("server_pid"):
        cpu_table(runs, baseline, got.reload_cpu, out)
    if args.timeline:
        timelines(runs, out)
    problems = compare_counts(runs + inline)
    if problems:
        print("\nRow counts differ between runs:", file=out)
        for problem in problems:
            print(f"  {problem}", file=out)
        return 1
    if len(runs + inline) > 1:
        print("\nAll runs complete, with equal row counts.", file=out)
    return 0
