"""Time each report, and the peak memory of the process running it, on a big sample database.

    python -m kmdb.bench_reports --lines 3000000 \\
        --database sqlite:///bench-reports.sqlite3 \\
        --database mysql+pymysql://root@127.0.0.1/kmdb_bench_reports

Writes a sample export of --lines lines to --folder (once), imports it into each
database that does not hold it yet (`kmdb import --inline`, in a process of its
own), then runs every report in a fresh process and prints its wall time and peak
RSS. It measures; it never fails on a slow run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Names that the sample export (kmdb.sample) writes.
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "funnel 4 steps": (
        "funnel",
        {"steps": ["visited site", "viewed product", "added to cart", "purchased"]},
    ),
    "funnel skips by plan": (
        "funnel",
        {
            "steps": ["visited site", "viewed product", "added to cart", "purchased"],
            "mode": "skips",
            "by": "plan",
            "attribution": "at-entry",
        },
    ),
    "cohort week/week": ("cohort", {"first": "signed up", "return_": "billed"}),
    "cohort day/day every": (
        "cohort",
        {
            "first": "visited site",
            "return_": "purchased",
            "period": "day",
            "bucket": "day",
            "count": "every",
        },
    ),
    "revenue by month": ("revenue", {"property": "amount", "churn_days": 30}),
    "abtest plan": ("abtest", {"property": "plan", "goal": "purchased"}),
}


def _one(case: str, url: str) -> None:
    from kmdb import reports

    kind, options = CASES[case]
    started = time.perf_counter()
    getattr(reports, kind)(url, **options)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "rss_mb": _peak_mb()}))


def _peak_mb() -> float:
    # VmHWM belongs to this program's own address space; ru_maxrss would also count
    # the pages of the parent that forked it, before the exec.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _has_data(url: str, files: int) -> bool:
    from sqlalchemy import inspect, text

    from kmdb.load.engine import make_engine
    from kmdb.settings import Settings

    engine = make_engine(Settings(database_url=url))
    try:
        if "revisions" not in inspect(engine).get_table_names():
            return False
        with engine.connect() as conn:
            done = conn.execute(text("SELECT COUNT(*) FROM revisions WHERE status = 'done'"))
            return bool(done.scalar_one() >= files)
    finally:
        engine.dispose()


def _create_mysql_database(url: str) -> None:
    from sqlalchemy import create_engine, make_url, text

    parsed = make_url(url)
    if not parsed.drivername.startswith(("mysql", "mariadb")) or not parsed.database:
        return
    server = create_engine(parsed.set(database=""))
    with server.connect() as conn:
        conn.execute(
            text(f"CREATE DATABASE IF NOT EXISTS `{parsed.database}` CHARACTER SET utf8mb4")
        )
    server.dispose()


def _counts(url: str) -> str:
    from sqlalchemy import text

    from kmdb.load.engine import make_engine
    from kmdb.settings import Settings

    engine = make_engine(Settings(database_url=url))
    with engine.connect() as conn:
        events = conn.execute(text("SELECT COUNT(*) FROM events")).scalar_one()
        props = conn.execute(text("SELECT COUNT(*) FROM properties")).scalar_one()
    engine.dispose()
    return f"{events:,} events, {props:,} properties"


def main(argv: list[str] | None = None) -> None:
    """Build what is missing, then time every report on every database."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=3_000_000)
    parser.add_argument("--folder", default="bench-reports-export")
    parser.add_argument("--database", action="append", help="A database URL; repeat for more.")
    parser.add_argument("--only", action="append", help="Run only these cases (by name).")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    databases = args.database or ["sqlite:///bench-reports.sqlite3"]
    if args.one:
        _one(args.one, databases[0])
        return
    from kmdb.sample import write_sample

    folder = Path(args.folder)
    if not (folder / "revisions").is_dir():
        print(f"Writing a sample export of {args.lines:,} lines to {folder} ...", flush=True)
        write_sample(folder, args.lines, lines_per_revision=50_000)
    files = len(list((folder / "revisions").glob("*.json")))
    kmdb = str(Path(sys.executable).parent / "kmdb")
    for url in databases:
        _create_mysql_database(url)
        if not _has_data(url, files):
            print(f"Importing {folder} into {url} ...", flush=True)
            started = time.perf_counter()
            subprocess.run(
                [kmdb, "import", "--inline", "--source", str(folder)],
                env={**os.environ, "DATABASE_URL": url},
                check=True,
                stdout=subprocess.DEVNULL,
            )
            print(f"  imported in {time.perf_counter() - started:,.0f} s", flush=True)
        print(f"\n{url}: {_counts(url)}")
        print(f"{'report':<24} {'seconds':>8} {'peak RSS MB':>12}")
        for case in CASES:
            if args.only and case not in args.only:
                continue
            out = subprocess.run(
                [sys.executable, "-m", "kmdb.bench_reports", "--one", case, "--database", url],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            figures = json.loads(out.splitlines()[-1])
            print(f"{case:<24} {figures['seconds']:>8.2f} {figures['rss_mb']:>12.0f}", flush=True)


if __name__ == "__main__":
    main()
