"""The command line: parse options, call the library, print, exit. Nothing else lives here."""

from __future__ import annotations

import datetime as dt
import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from kmdb import settings as settings_module
from kmdb.errors import ConfigError, KmdbError
from kmdb.settings import Settings, mask_url


def _settings() -> Settings:
    settings_module.load_dotenv_file()
    return settings_module.from_env()


def friendly(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn kmdb's errors into one sentence on stderr and an exit status, not a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ConfigError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)
        except KmdbError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)

    return wrapper


def _date_option(name: str, envvar: str, help_text: str) -> Callable[..., Any]:
    def parse(_ctx: Any, _param: Any, value: str | None) -> dt.date | None:
        if value is None:
            return None
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a date like 2014-01-31.") from None

    return click.option(name, type=str, callback=parse, help=f"{help_text} (default ${envvar}).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kmdb")
def cli() -> None:
    """kmdb: import KISSmetrics Data Export dumps into MySQL or SQLite.

    Settings come from the environment and from a .env file; see .env.example.
    """


@cli.command()
@friendly
def flush() -> None:
    """Create the schema if missing and empty the imported data.

    The filter tables (ignored_users, whitelisted_events, blacklisted_properties)
    are configuration and are kept. Example:

        DATABASE_URL=mysql+pymysql://root@127.0.0.1/kmdb kmdb flush
    """
    from kmdb.db import make_engine
    from kmdb.flush import flush as flush_database

    settings = _settings()
    engine = make_engine(settings)
    created, removed = flush_database(engine)
    click.echo(f"Database {mask_url(settings.database_url)}")
    if created:
        click.echo(f"  created tables: {', '.join(created)}")
    for table, count in removed.items():
        click.echo(f"  emptied {table}: {count} rows")
    _flush_redis(settings)


def _flush_redis(settings: Settings) -> None:
    from kmdb import queues

    try:
        redis = queues.connect(settings)
    except ConfigError as exc:
        if settings.database_url.startswith("sqlite"):
            click.echo(f"Warning: {exc} Only the database was emptied.", err=True)
            return
        raise
    removed = queues.clear(settings, redis)
    click.echo(
        f"Redis {mask_url(settings.redis_url)}: removed {removed} jobs of queue {settings.queue!r}"
    )


@cli.command()
@_date_option("--min-date", "KMDB_MIN_DATE", "Start of the first partition, e.g. 2013-01-01")
@_date_option("--max-date", "KMDB_MAX_DATE", "Last date to have its own partition")
@click.option(
    "--days",
    type=click.IntRange(min=1),
    help="Days per partition (default $KMDB_DAYS_PER_PARTITION, else 7).",
)
@friendly
def partition(min_date: dt.date | None, max_date: dt.date | None, days: int | None) -> None:
    """Partition events, properties and aliases by time (MySQL only).

    Re-running adds partitions up to a later --max-date and keeps existing rows.
    Example:

        kmdb partition --min-date 2014-01-01 --max-date 2014-03-01 --days 7
    """
    from kmdb.db import create_schema, is_mysql, make_engine
    from kmdb.partition import partition as apply_partitions

    settings = _settings()
    engine = make_engine(settings)
    if not is_mysql(engine):
        click.echo("Partitioning is a MySQL feature; SQLite needs none, so nothing was changed.")
        return
    create_schema(engine)
    plans = apply_partitions(
        engine,
        min_date or settings.min_date,
        max_date or settings.max_date,
        days or settings.days_per_partition,
    )
    for p in plans:
        if p.new:
            click.echo(
                f"{p.table}: added {len(p.new)} partitions, {p.new[0]:%Y-%m-%d} to "
                f"{p.new[-1]:%Y-%m-%d} (now {p.total} with the catch-all)"
            )
        else:
            click.echo(f"{p.table}: already covered, {p.total} partitions, nothing added")


def _standalone(name: str) -> Callable[[], None]:
    def run() -> None:
        cli.main(args=[name, *sys.argv[1:]], prog_name=f"kmdb-{name}")

    return run


main = cli
flush_main = _standalone("flush")
partition_main = _standalone("partition")
