"""bin/bench scale: how kmdb's import cost grows with the number of jobs and the database's size.

Prints, from one command (docs/performance.md tells how to read them):

1. many jobs: one export (--lines, 8 revision files) imported with 2 `kmdb-work --burst`
   at part sizes that make about --jobs import jobs (8, 300 and 1,300; add 20000 for a
   100 GB export's count): the jobs RQ ran, the wall time, its ratio to the first run's,
   and Redis commands per job (INFO commandstats of a redis-server of the run's own), with
   a check that every run's rows equal the first's (kmdb/bench/manyjobs.py);
2. best bulk path: the first run's own final rows loaded with LOAD DATA LOCAL INFILE into
   a copy of the tables without secondary indexes, then indexed; and into the indexed
   tables (bin/bench's reload); the import's time over each;
3. one more revision: a revision of --revision-lines lines on top of a database of
   --big-lines lines, against the same revision into an empty database, not partitioned
   and partitioned by 7 days, with the time of a settle that changes nothing
   (kmdb/bench/ontop.py); on --mysql-url, or on a private mariadbd per --server-args.

It measures; it never fails on a slow run, only (exit 1) on an incomplete or
inconsistent import. Server-wide settings of the shared server are never changed.

    bin/bench scale                                  # 300,000 and 3,000,000 lines
    bin/bench scale --lines 300000 --big-lines 1000000 --jobs 8,300,1300,20000
    bin/bench scale --tables revision --server-args= \\
        --server-args='--innodb-buffer-pool-size=1G --innodb-log-file-size=512M'
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from kmdb.bench import ontop, s3
from kmdb.bench.commands import say
from kmdb.bench.manyjobs import REVISION_FILES, many_jobs, print_jobs
from kmdb.bench.measure import server_pid
from kmdb.bench.private import PrivateMariaDB, PrivateRedis
from kmdb.bench.reload import bulk_path, reload
from kmdb.bench.report import compare_counts
from kmdb.bench.runs import Run
from kmdb.bench.server import MySQL
from kmdb.errors import BenchError


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The scale benchmark's options (argparse's usage error, exit 2, for bad ones)."""
    parser = argparse.ArgumentParser(
        prog="bin/bench scale",
        description="Time kmdb's import as its jobs grow in number and its database in size.",
    )
    parser.add_argument("--lines", type=int, default=300_000, help="lines of the many-jobs export")
    parser.add_argument(
        "--jobs", type=_ints, default=[8, 300, 1300], help="import jobs to aim at (8,300,1300)"
    )
    parser.add_argument(
        "--part-sizes", type=_ints, help="KMDB_PART_SIZE values in bytes, instead of --jobs"
    )
    parser.add_argument("--big-lines", type=int, default=3_000_000, help="the big database's lines")
    parser.add_argument("--revision-lines", type=int, default=60_000, help="the one more revision")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--tables",
        default="jobs,revision",
        help="jobs (many jobs, with the best bulk path) and/or revision (one more revision)",
    )
    parser.add_argument(
        "--server-args",
        action="append",
        help="run the one-more-revision table on a private mariadbd with these arguments "
        "(repeatable; --server-args=ARGS; empty for its defaults) instead of on --mysql-url",
    )
    parser.add_argument("--mysql-url", default="mysql+pymysql://root@127.0.0.1:3306")
    parser.add_argument(
        "--redis-url", help="an existing Redis (default: a redis-server of the run's own)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    args.tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    if not args.tables or set(args.tables) - {"jobs", "revision"}:
        parser.error("--tables takes jobs, revision or both, e.g. --tables jobs,revision")
    if args.lines < REVISION_FILES or args.revision_lines < 1 or args.big_lines < 1:
        parser.error(f"--lines needs at least {REVISION_FILES}, the other sizes at least 1")
    if min(args.part_sizes or args.jobs or [0]) < 1 or args.workers < 1:
        parser.error("--jobs, --part-sizes and --workers need numbers of at least 1")
    return args


def best_bulk(
    args: argparse.Namespace, mysql: MySQL, run: Run, ctx: dict[str, Any], out: Any
) -> None:
    """The first many-jobs import against the bulk paths of its own final rows."""
    database = ctx.pop("first_database")
    say("the best bulk path: the final rows into tables without secondary indexes, then indexed")
    best, _tables, indexing = bulk_path(mysql, database, ctx["tmp"] / "dump")
    say("the reload: the final rows into the emptied, indexed tables")
    again, _tables, _cpu = reload(mysql, database, ctx["tmp"] / "dump", None)
    mysql.drop(database)
    print(f"\nBest bulk path for the {run.label} import's own final rows", file=out)
    print(f"  import, {sum(run.jobs_of.values())} jobs: {run.seconds:8.1f} s", file=out)
    print(
        f"  LOAD DATA into the tables without secondary indexes, then the indexes built: "
        f"{best:.1f} s ({indexing:.1f} s of it building); import/best {run.seconds / best:.2f}x "
        f"(target <= 1.0x)",
        file=out,
    )
    print(
        f"  LOAD DATA into the emptied, indexed tables (bin/bench's reload): {again:.1f} s; "
        f"import/reload {run.seconds / again:.2f}x",
        file=out,
    )


def revision_tables(
    args: argparse.Namespace, mysql: MySQL, ctx: dict[str, Any]
) -> list[ontop.Table]:
    """The one-more-revision table on --mysql-url, or on a private server per --server-args."""
    from kmdb.sample import write_sample

    big = ctx["big_export"] = ctx["tmp"] / "big-export"
    k = ctx["big_revisions"] = max(1, round(args.big_lines / args.revision_lines))
    say(f"writing {(k + 2) * args.revision_lines:,} lines to {big}")
    write_sample(
        big,
        (k + 2) * args.revision_lines,
        seed=args.seed + 1,
        lines_per_revision=args.revision_lines,
        bad_every=0,
    )
    ctx.setdefault("bucket", ctx["prefix"].replace("_", "-"))
    tables = []
    if args.server_args is None:
        ctx["server_no"] = 0
        shared = f"{mysql.params['host']}:{mysql.params['port']}, {mysql.server()}"
        tables.append(ontop.one_more_revision(args, mysql, ctx["client"], ctx, shared))
    for i, given in enumerate(args.server_args or [], 1):
        ctx["server_no"] = i
        server = PrivateMariaDB(ctx["tmp"] / f"mariadb-{i}", *shlex.split(given))
        server.start()
        try:
            private = MySQL(server.server_url)
            info = f"private mariadbd {given or '(its defaults)'}; {private.server()}"
            tables.append(ontop.one_more_revision(args, private, ctx["client"], ctx, info))
        finally:
            server.stop()
            shutil.rmtree(ctx["tmp"] / f"mariadb-{i}", ignore_errors=True)
    return tables


def main(argv: list[str] | None = None) -> int:
    """Run the scale benchmark; 0 when every import was complete and consistent."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    mysql = MySQL(args.mysql_url)
    tmp = Path(tempfile.mkdtemp(prefix="kmdb-bench-scale-"))
    ctx: dict[str, Any] = {
        "tmp": tmp,
        "prefix": f"kmdb_scale_{secrets.token_hex(4)}",
        "server_pid": server_pid(),
        "buckets": [],
    }
    out, status = sys.stdout, 0
    print(f"kmdb bench scale: {os.cpu_count()} cores; shared server: {mysql.server()}", file=out)
    try:
        with contextlib.ExitStack() as cleanup:
            if args.redis_url is None:
                redis = PrivateRedis(tmp / "redis")
                redis.start()
                cleanup.callback(redis.stop)
                args.redis_url = redis.url
            endpoint = cleanup.enter_context(s3.s3_server())
            ctx["client"] = s3.client(endpoint)
            cleanup.callback(_remove_buckets, ctx)
            ctx["base_env"] = {**s3.aws_env(endpoint), "KMDB_REDIS_URL": args.redis_url}
            if "jobs" in args.tables:
                runs = many_jobs(args, mysql, ctx)
                print_jobs(args, runs, ctx, out)
                best_bulk(args, mysql, runs[0], ctx, out)
                if compare_counts(runs):
                    print(
                        "\nRows differ between runs:\n  " + "\n  ".join(compare_counts(runs)),
                        file=out,
                    )
                    status = 1
            if "revision" in args.tables:
                tables = revision_tables(args, mysql, ctx)
                for table in tables:
                    ontop.print_table(table, out)
                if ontop.check_settles(tables):
                    print("\n" + "\n".join(ontop.check_settles(tables)), file=out)
                    status = 1
    except BenchError as exc:
        say(f"FAILED: {exc}")
        print(f"\nFAILED: {exc}", file=out)
        status = 1
    finally:
        for name in list(mysql.made):
            with contextlib.suppress(Exception):
                mysql.drop(name)
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if status == 0:
        same = ", and every many-jobs run has the first run's rows" if "jobs" in args.tables else ""
        print(f"\nAll imports complete{same}.", file=out)
    return status


def _remove_buckets(ctx: dict[str, Any]) -> None:
    for bucket in ctx["buckets"]:
        with contextlib.suppress(Exception):
            s3.remove_bucket(ctx["client"], bucket)


if __name__ == "__main__":
    sys.exit(main())
