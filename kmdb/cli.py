"""The command line: parse options, call the library, print. Nothing else lives here.

Each command is also a console script of its own (kmdb-import is kmdb import);
how a command ends on a failure is kmdb.console's and kmdb.errors' to say.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import click

from kmdb.console import TRACEBACK, date_option, exit_now, friendly, load_settings
from kmdb.errors import ConfigError, JobsFailed
from kmdb.report_commands import report
from kmdb.settings import Settings, mask_url


def _want_tracebacks(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[TRACEBACK] = True


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kmdb")
@click.option(
    "--traceback",
    is_flag=True,
    expose_value=False,
    callback=_want_tracebacks,
    help="Show the whole trace of a failure, not one sentence (or set KMDB_DEBUG=1).",
)
def cli() -> None:
    """kmdb: import KISSmetrics Data Export dumps into MySQL or SQLite.

    Settings come from the environment and from a .env file; see .env.example.
    Each command is also a script of its own (kmdb flush is kmdb-flush). Example:

        DATABASE_URL=sqlite:///kmdb.sqlite3 kmdb import --inline --source ./sample
    """


cli.add_command(report)


@cli.command()
@friendly
def flush() -> None:
    """Create the schema if missing and empty the imported data, and kmdb's jobs in Redis.

    The filter tables (ignored_users, whitelisted_events, blacklisted_properties)
    are configuration and are kept. The database and Redis are both checked
    (reachable, and writable by this user) before anything is emptied. Example:

        DATABASE_URL=mysql+pymysql://root@127.0.0.1/kmdb kmdb flush
    """
    from kmdb.load import schema
    from kmdb.load.engine import make_engine
    from kmdb.load.flush import check_can_write, contents
    from kmdb.load.flush import flush as flush_database
    from kmdb.orchestrate import queues
    from kmdb.orchestrate.queues import check_redis

    settings = load_settings("database_url", "redis_url", "queue")
    where = mask_url(settings.database_url)
    engine = make_engine(settings)
    try:
        redis = queues.connect(settings)
    except ConfigError as exc:
        # SQLite is the embedded setup: imports with --inline need no Redis at all.
        if not settings.database_url.startswith("sqlite"):
            raise
        click.echo(f"Warning: {exc} Only the database will be emptied.", err=True)
        redis = None
    if redis is not None:
        check_redis(settings, redis)
    check_can_write(engine, where)
    rows = contents(engine)
    kept = ", ".join(t.name for t in schema.FILTERS)
    click.echo(
        f"Emptying {sum(rows.values()):,} rows of imported data in {where} (keeping {kept})"
        + (
            f" and the jobs of queue {settings.queue!r} at {mask_url(settings.redis_url)}."
            if redis is not None
            else "."
        )
    )
    # Jobs first: a stale job left after the tables are emptied would import into them.
    if redis is not None:
        removed_jobs = queues.clear(settings, redis)
    created, removed = flush_database(engine)
    click.echo(f"Database {where}")
    if created:
        click.echo(f"  created: {', '.join(created)}")
    for table, count in removed.items():
        click.echo(f"  emptied {table}: {count} rows")
    if redis is not None:
        click.echo(
            f"Redis {mask_url(settings.redis_url)}: removed {removed_jobs} jobs of queue "
            f"{settings.queue!r}"
        )


@cli.command()
@date_option("--min-date", "KMDB_MIN_DATE", "Start of the first partition, e.g. 2013-01-01")
@date_option("--max-date", "KMDB_MAX_DATE", "Last date to have its own partition")
@click.option(
    "--days",
    type=click.IntRange(min=1),
    help="Days per partition (default $KMDB_DAYS_PER_PARTITION, else 7).",
)
@click.option("--from-index", is_flag=True, help="Take MIN and MAX from the export's index.csv.")
@click.option("--source", help="The export whose index.csv to read (default $KMDB_SOURCE).")
@friendly
def partition(
    min_date: dt.date | None,
    max_date: dt.date | None,
    days: int | None,
    from_index: bool,
    source: str | None,
) -> None:
    """Partition events, properties and aliases by time (MySQL only).

    Re-running adds partitions up to a later --max-date and keeps existing rows.
    --from-index plans them from the export's index.csv (when KM received the
    data; older events land in the first partition). Example:

        kmdb partition --min-date 2014-01-01 --max-date 2014-03-01 --days 7
    """
    from kmdb.load.database import create_schema
    from kmdb.load.engine import is_mysql, make_engine
    from kmdb.load.partition import apply, plan_all

    settings = load_settings()
    engine = make_engine(settings)
    if not is_mysql(engine):
        click.echo("Partitioning is a MySQL feature; SQLite needs none, so nothing was changed.")
        return
    min_from = "--min-date" if min_date else "KMDB_MIN_DATE"
    if from_index:
        from kmdb.errors import PartitionError
        from kmdb.extract.export import open_source
        from kmdb.load.partition import dates_from_index

        index = open_source(source, settings).read_text("index.csv")
        if index is None:
            raise PartitionError(
                "The export has no index.csv; set --min-date and --max-date instead."
            )
        first, last = dates_from_index(index)
        click.echo(f"index.csv: data received from {first} to {last}")
        min_from = min_from if min_date else "index.csv"
        min_date, max_date = min_date or first, max_date or last
    min_date = min_date or settings.min_date
    max_date = max_date or settings.max_date
    # Every plan is checked before the schema is made or any table altered.
    plans = plan_all(engine, min_date, max_date, days or settings.days_per_partition)
    create_schema(engine)
    apply(engine, plans)
    ignored = next((p for p in plans if p.ignored_min is not None and p.existing), None)
    if ignored is not None:
        click.echo(
            f"Note: the min date {ignored.ignored_min} ({min_from}) is ignored: the tables are "
            f"partitioned already, so new partitions go on from the last boundary, "
            f"{ignored.existing[-1]}."
        )
    for p in plans:
        if p.new:
            click.echo(
                f"{p.table}: added {len(p.new)} partitions, {p.new[0]:%Y-%m-%d} to "
                f"{p.new[-1]:%Y-%m-%d} (now {p.total} with the catch-all)"
            )
        else:
            click.echo(f"{p.table}: already covered, {p.total} partitions, nothing added")


@cli.command(name="import")
@click.option(
    "--source",
    help="s3://bucket[/prefix] or a folder (default $KMDB_SOURCE, else s3://$AWS_BUCKET).",
)
@click.option("--inline", is_flag=True, help="Import in this process, without Redis or workers.")
@click.option("--wait", is_flag=True, help="Follow the workers' progress; exit 1 if a job failed.")
@friendly
def import_(source: str | None, inline: bool, wait: bool) -> None:
    """Find revision files not imported yet and import them.

    Without --inline the imports are enqueued as RQ jobs for kmdb-work; with
    --inline they run here, with a progress bar, and a summary is printed.
    Example:

        kmdb import --inline --source ./sample
    """
    from kmdb.extract.export import open_source
    from kmdb.load.database import create_schema
    from kmdb.load.engine import make_engine

    settings = load_settings(every=True)
    engine = make_engine(settings)
    create_schema(engine)
    src = open_source(source, settings)
    if inline:
        from kmdb.stop import stopping_on_signals

        # Ctrl-C or SIGTERM stops after the chunk in flight: no failure (kmdb.errors.exit_status).
        with stopping_on_signals():
            _import_inline(engine, src, settings)
        return
    from kmdb.orchestrate import queues
    from kmdb.orchestrate.graph import enqueue_import
    from kmdb.pipeline.discovery import new_revisions

    redis = queues.connect(settings)
    todo = new_revisions(engine, src, settings)
    sizes = {n: size for n in todo if (size := src.size(n)) is not None}
    plan = enqueue_import(settings, redis, engine, src.name, todo, sizes)
    enqueued, active = plan.enqueued, plan.active
    if plan.dead:
        click.echo(f"Found {len(plan.dead)} jobs of workers that died; planned them again.")
    if plan.stuck:
        click.echo(f"Found {len(plan.stuck)} jobs that would wait for ever; planned them again.")
    where = f"queue {settings.queue!r} at {mask_url(settings.redis_url)}"
    if enqueued:
        click.echo(f"Enqueued {len(enqueued)} revisions ({_ranges(enqueued)}) on {where}:")
        click.echo(
            f"{_jobs(plan.scans, 'scan')} for aliases, a settle step, {_jobs(plan.parts, 'import')} "
            f"(small files share a job, big ones are cut in parts; at most "
            f"{settings.part_size:,} bytes each) and a final settle."
        )
    if active:
        click.echo(f"Already queued or running: {len(active)} revisions ({_ranges(active)}).")
    if not enqueued and not active:
        click.echo(f"Nothing new to import in {src.name}.")
        if plan.settle is not None:
            click.echo("Enqueued a settle step for aliases left by an interrupted one.")
    if wait:
        from kmdb.orchestrate.follow import follow

        failed = follow(settings, redis, engine, enqueued + active)
        if failed:
            raise JobsFailed(len(failed), failed)
        click.echo("All jobs done.")
    elif enqueued:
        click.echo("Run kmdb-work (or kmdb-pool) to import them.")


def _jobs(count: int, kind: str) -> str:
    return f"{count} {kind} job" + ("" if count == 1 else "s")


def _ranges(numbers: list[int]) -> str:
    spans: list[list[int]] = []
    for n in sorted(numbers):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)


def _import_inline(engine: Any, src: Any, settings: Settings) -> None:
    import gc

    from tqdm import tqdm

    from kmdb.pipeline.discovery import new_revisions
    from kmdb.pipeline.inline import import_inline, summary

    # As in a worker (kmdb.orchestrate.workers.warm_up), and here because this process exists for
    # this import only: the collector's full passes would otherwise walk every loaded
    # module's objects again and again while rows pile up.
    gc.freeze()
    todo = new_revisions(engine, src, settings)
    with tqdm(total=len(todo), unit=" revisions", disable=None, file=sys.stderr) as bar:

        def one_more(_revision: int) -> None:
            bar.update(1)

        _, seconds = import_inline(
            engine,
            src,
            settings,
            todo,
            on_chunk=lambda counts: bar.set_postfix_str(f"{counts.lines} lines"),
            on_revision=one_more,
        )
    click.echo(
        f"Imported {len(todo)} revisions from {src.name} into {mask_url(settings.database_url)}"
    )
    total = summary(engine)
    for line in total.lines_of_text(seconds):
        click.echo(line)
    if total.rejected:
        click.echo("Rejected lines, with why: SELECT revision, line, reason FROM rejected_lines;")


@cli.command()
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@friendly
def work(burst: bool) -> None:
    """Run an RQ worker on kmdb's queue.

    Start as many as you like, on one machine or several, with the same
    DATABASE_URL and KMDB_REDIS_URL. With --burst it exits once the queue is
    empty, with status 1 if any of its jobs failed. Example:

        kmdb work --burst
    """
    from kmdb.orchestrate.workers import work as run_worker

    settings = load_settings(every=True)
    logging.getLogger().setLevel(logging.INFO)
    _done, failed = run_worker(settings, burst)
    if failed:
        raise JobsFailed(failed)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@friendly
def status(as_json: bool) -> None:
    """Show where the import stands: revisions, rows, rate and ETA, jobs and errors.

    Example:

        kmdb status --json
    """
    import json

    from kmdb.load.database import open_existing
    from kmdb.orchestrate import queues
    from kmdb.orchestrate.status import render, report

    settings = load_settings()
    # A status creates nothing: without a database it says so.
    engine = open_existing(settings)
    try:
        redis = queues.connect(settings)
    except ConfigError:
        redis = None
    data = report(settings, engine, redis)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    click.echo(f"Database {mask_url(settings.database_url)}")
    for line in render(data):
        click.echo(line)


@cli.command()
@friendly
def realias() -> None:
    """Recompute every person from the aliases table and re-point events and properties.

    For after you edited `aliases` by hand: the result equals a fresh import
    with those aliases. Example:

        kmdb realias
    """
    from kmdb.load.database import open_existing
    from kmdb.load.flush import check_can_write
    from kmdb.load.settle import settle

    settings = load_settings()
    engine = open_existing(settings)
    check_can_write(engine, mask_url(settings.database_url), "recompute people")
    result = settle(engine, full=True)
    click.echo(
        f"People recomputed: {result.people_changed} identities changed person; "
        f"{result.events_moved} events and {result.properties_moved} properties re-pointed."
    )


@cli.command()
@click.option(
    "-n",
    "--workers",
    type=click.IntRange(min=1),
    help="How many (default $KMDB_WORKERS, else the number of cores).",
)
@click.option(
    "-f",
    "--procfile",
    type=click.Path(dir_okay=False),
    help="Procfile to use (default ./Procfile, else kmdb's own).",
)
@friendly
def pool(workers: int | None, procfile: str | None) -> None:
    """Run several kmdb-work processes from the Procfile, through honcho.

    Ctrl-C or SIGTERM stops them: each job commits its chunk in flight and
    stops; the next kmdb-import goes on from there. Example:

        KMDB_WORKERS=4 kmdb pool
    """
    from kmdb.orchestrate.workers import pool_command

    settings = load_settings(every=True)
    command = pool_command(settings, workers, procfile)
    click.echo(
        f"Starting {command[-1].split('=')[1]} workers with honcho ({' '.join(command[2:])})"
    )
    sys.stdout.flush()
    os.execvp(command[0], command)


@cli.command()
@click.option("--port", default=9181, show_default=True)
@friendly
def ui(port: int) -> None:
    """Serve rq-dashboard, a web view of the queues, on localhost.

    Needs the ui extra: pip install 'kmdb[ui]'. Example:

        kmdb ui --port 9181
    """
    import importlib.util

    if importlib.util.find_spec("rq_dashboard") is None:
        raise ConfigError("rq-dashboard is not installed; run pip install 'kmdb[ui]'.")
    settings = load_settings()
    click.echo(f"rq-dashboard on http://127.0.0.1:{port}/ for {mask_url(settings.redis_url)}")
    command = [
        sys.executable,
        "-m",
        "rq_dashboard",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    # By environment, not argument: anyone on the machine can read a command line (ps).
    env = {**os.environ, "RQ_DASHBOARD_REDIS_URL": settings.redis_url}
    sys.stdout.flush()
    # A shell script that starts a command in the background has it ignore SIGINT, and
    # Python keeps an ignored SIGINT ignored: the server would then outlive Ctrl-C, as
    # the workers (whose handlers RQ installs) and kmdb-pool (honcho's) do not.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.execvpe(command[0], command, env)


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--lines", default=10_000, show_default=True, help="Lines to write in all.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--lines-per-revision", default=2_000, show_default=True)
@click.option("--first-revision", default=1, show_default=True)
@friendly
def sample(
    folder: str, lines: int, seed: int, lines_per_revision: int, first_revision: int
) -> None:
    """Write a realistic synthetic KM export to FOLDER, to try kmdb on.

    Example:

        kmdb sample ./sample --lines 20000
    """
    from kmdb.sample import write_sample

    stats = write_sample(
        folder,
        lines,
        seed=seed,
        lines_per_revision=lines_per_revision,
        first_revision=first_revision,
    )
    last = stats.first_revision + stats.revisions - 1
    click.echo(
        f"Wrote {stats.lines:,} lines in revisions {stats.first_revision}-{last} to {folder} "
        f"({stats.bad_lines} bad lines, {stats.blank_lines} blank)"
    )


# Commands that end by leaving the process at once: once boto3, RQ and SQLAlchemy
# are loaded, the interpreter's own teardown is slow, and a burst worker (and the
# kmdb-import before it) would add it to every import's wall time.
_QUICK_EXIT = {"work", "import"}


def _standalone(name: str) -> Callable[[], None]:
    # The command itself, not the group with the command's name as its first argument:
    # click builds "Usage: ..." and "Try '... --help'" from the path it was called by.
    command = cli.commands[name]

    def run() -> None:
        try:
            command.main(
                args=sys.argv[1:], prog_name=f"kmdb-{name}", help_option_names=["-h", "--help"]
            )
        except SystemExit as exc:
            if name in _QUICK_EXIT:
                exit_now(exc.code)
            raise

    return run


main = cli
flush_main = _standalone("flush")
partition_main = _standalone("partition")
import_main = _standalone("import")
work_main = _standalone("work")
sample_main = _standalone("sample")
status_main = _standalone("status")
realias_main = _standalone("realias")
pool_main = _standalone("pool")
ui_main = _standalone("ui")
