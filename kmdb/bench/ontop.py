"""The scale benchmark's one-more-revision table: one revision imported on top of a big
database, against the same revision into an empty one, partitioned and not.

One export of K + 2 revisions of the same size: revisions 1..K make the big
database; revision K+1 goes on top of it as it is, then the tables are
partitioned by 7 days (kmdb-partition) and revision K+2 goes on top. Each is
also imported alone into an empty database (partitioned alike). After each
import on top, a settle that changes nothing is timed on the big database.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kmdb.bench.commands import check_call, command, environment, say
from kmdb.bench.runs import Run, run_workers
from kmdb.bench.server import MySQL

DAYS = 7
NOTHING = "nothing"


@dataclass
class Row:
    """One row of the table: a revision on top of the big database, and alone into an empty one."""

    label: str
    on_top: float
    into_empty: float
    settle: float  # a settle that changes nothing, on the big database just after
    settled: str  # what that settle did (it should change nothing)
    # Of on_top: the settle before the import (people's new canonical ids), the import
    # jobs (first start to last end) and, beside them, the re-point of older rows of the
    # people that the revision's aliases merge.
    settle_before: float = 0.0
    imports: float = 0.0
    repoint: float = 0.0

    @property
    def ratio(self) -> float:
        return self.on_top / self.into_empty


@dataclass
class Table:
    """The figures of the one-more-revision table on one server."""

    server: str
    big_lines: int
    big_revisions: int
    revision_lines: int
    first_import: float = 0.0
    partitioning: float = 0.0
    rows: list[Row] = field(default_factory=list)


def _upload(client: Any, bucket: str, export: Path, revisions: range) -> None:
    for n in revisions:
        client.upload_file(str(export / "revisions" / f"{n}.json"), bucket, f"revisions/{n}.json")


def _partition(mysql: MySQL, database: str, export: Path, ctx: dict[str, Any]) -> float:
    """kmdb-partition by DAYS days, planned from the export's index.csv; its seconds."""
    env = environment(ctx["base_env"], DATABASE_URL=mysql.url_of(database))
    started = time.perf_counter()
    check_call(
        [*command("partition"), "--days", str(DAYS), "--from-index", "--source", str(export)],
        env,
        ctx["tmp"],
        ctx["tmp"] / f"partition-{database}.log",
    )
    return time.perf_counter() - started


def stages(run: Run) -> tuple[float, float, float]:
    """A run's settle before the import, its import jobs (first start to last end) and its
    re-point of older rows, seconds."""

    def took(words: str) -> float:
        return sum(end - start for start, end, _, what in run.timeline if words in what)

    spans = [(start, end) for start, end, _, what in run.timeline if what.startswith("import ")]
    imports = max(e for _, e in spans) - min(s for s, _ in spans) if spans else 0.0
    return took("settle people before"), imports, took("re-point older rows")


def idle_settle(mysql: MySQL, database: str, tmp: Path) -> tuple[float, str]:
    """Time kmdb.load.settle.settle on database; its seconds and what it changed (NOTHING)."""
    from kmdb.load.engine import make_engine
    from kmdb.load.settle import settle
    from kmdb.settings import Settings

    engine = make_engine(Settings(database_url=mysql.url_of(database), tmp_dir=str(tmp)))
    try:
        started = time.perf_counter()
        result = settle(engine)
        took = time.perf_counter() - started
    finally:
        engine.dispose()
    if not dataclasses.is_dataclass(result):
        return took, str(result)
    changed = {k: v for k, v in dataclasses.asdict(result).items() if v}
    return took, ", ".join(f"{k} {v}" for k, v in changed.items()) or NOTHING


def one_more_revision(
    args: argparse.Namespace, mysql: MySQL, client: Any, ctx: dict[str, Any], server: str
) -> Table:
    name = f"server {ctx['server_no']}" if ctx["server_no"] else "shared server"
    """The table on mysql's server; the export ctx["big_export"] holds K + 2 revisions."""
    export: Path = ctx["big_export"]
    k, per = ctx["big_revisions"], args.revision_lines
    table = Table(server, k * per, k, per)
    bucket = f"{ctx['bucket']}-{ctx['server_no']}"
    client.create_bucket(Bucket=bucket)
    ctx["buckets"].append(bucket)
    _upload(client, bucket, export, range(1, k + 1))
    tag = f"s{ctx['server_no']}"

    def workers(name: str, bucket: str, revisions: int, lines: int, into: str | None) -> Run:
        run_ctx = {**ctx, "bucket": bucket, "revisions": revisions, "lines": lines}
        run, _ = run_workers(args.workers, args, mysql, ctx["base_env"], run_ctx, name, into)
        return run

    say(f"{name}: the big database, {k * per:,} lines in {k} revisions")
    big = f"{ctx['prefix']}_{tag}_big"
    table.first_import = workers(f"{tag}_big", bucket, k, k * per, None).seconds
    for n, partitioned in ((k + 1, False), (k + 2, True)):
        if partitioned:
            say(f"{name}: kmdb-partition --days {DAYS} on the big database")
            table.partitioning = _partition(mysql, big, export, ctx)
        _upload(client, bucket, export, range(n, n + 1))
        say(f"{name}: revision {n} on top of the big database")
        top_run = workers(f"{tag}_top{n}", bucket, n, n * per, big)
        settle_s, settled = idle_settle(mysql, big, ctx["tmp"])
        alone = f"{bucket}-r{n}"
        client.create_bucket(Bucket=alone)
        ctx["buckets"].append(alone)
        _upload(client, alone, export, range(n, n + 1))
        empty = f"{ctx['prefix']}_{tag}_empty{n}"
        into = None
        if partitioned:
            mysql.create(empty)
            _partition(mysql, empty, export, ctx)
            into = empty
        say(f"{name}: revision {n} into an empty database")
        into_empty = workers(f"{tag}_empty{n}", alone, 1, per, into).seconds
        mysql.drop(empty)
        label = f"kmdb-partition by {DAYS} days" if partitioned else "not partitioned"
        row = Row(label, top_run.seconds, into_empty, settle_s, settled, *stages(top_run))
        table.rows.append(row)
    mysql.drop(big)
    return table


def check_settles(tables: list[Table]) -> list[str]:
    """The idle settles that changed something (none should)."""
    return [
        f"{t.server}, {r.label}: the settle after the import changed something: {r.settled}"
        for t in tables
        for r in t.rows
        if r.settled != NOTHING
    ]


def print_table(t: Table, out: Any) -> None:
    """The one-more-revision table of one server."""

    def p(text: str = "") -> None:
        print(text, file=out)

    p()
    p(
        f"One more revision of {t.revision_lines:,} lines on a database of {t.big_lines:,} lines "
        f"({t.big_revisions} revisions), against the same revision into an empty database"
    )
    p(f"Server: {t.server}")
    p(f"{'database':<26} {'on top s':>9} {'into empty s':>13} {'ratio':>7} {'idle settle s':>14}")
    for r in t.rows:
        p(
            f"{r.label:<26} {r.on_top:>9.1f} {r.into_empty:>13.1f} {r.ratio:>6.2f}x "
            f"{r.settle:>14.2f}"
        )
    p(
        f"  the big database's first import: {t.first_import:.1f} s "
        f"({t.big_lines / t.first_import:,.0f} lines/s); kmdb-partition on it: {t.partitioning:.1f} s"
    )
    for r in t.rows:
        p(
            f"  on top, {r.label}: the settle before the import {r.settle_before:.1f} s, "
            f"the import jobs {r.imports:.1f} s, the re-point of older rows beside them "
            f"{r.repoint:.1f} s"
        )
    p("  idle settle: kmdb.load.settle.settle on the big database right after, changing nothing")
    p("  (targets: ratio <= 2.0x, idle settle < 0.2 s at 3 million lines)")
