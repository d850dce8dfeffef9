"""kmdb-flush and kmdb-partition as a user runs them, on MariaDB and SQLite."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect, text

from tests.helpers import run

SEED_COLUMNS = {
    "events": {"id", "t", "n", "user_id"},
    "properties": {"id", "t", "key", "value", "user_id", "event_id"},
    "keys": {"id", "string"},
    "users": {"id", "name"},
    "aliases": {"id", "name1", "name2", "t"},
    "ignored_users": {"name"},
    "whitelisted_events": {"name"},
    "blacklisted_properties": {"name"},
}


def _partitions(url: str, table: str) -> int:
    with create_engine(url).connect() as conn:
        return conn.execute(
            text(
                "SELECT COUNT(*) FROM information_schema.partitions WHERE table_schema = DATABASE() "
                "AND table_name = :t AND partition_name IS NOT NULL"
            ),
            {"t": table},
        ).scalar_one()


def test_flush_creates_the_seed_schema(database_url: str, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "DATABASE_URL": database_url}
    first = run("kmdb-flush", env=env)
    assert "created:" in first.stdout
    assert "emptied events: 0 rows" in first.stdout
    inspector = inspect(create_engine(database_url))
    for table, columns in SEED_COLUMNS.items():
        assert columns <= {c["name"] for c in inspector.get_columns(table)}, table
    second = run("kmdb", "flush", env=env)
    assert "created:" not in second.stdout


def test_flush_empties_data_and_keeps_filters(database_url: str, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "DATABASE_URL": database_url}
    run("kmdb-flush", env=env)
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (name) VALUES ('bob'), ('bob '), ('Bob')"))
        conn.execute(text("INSERT INTO ignored_users (name) VALUES ('spammer')"))
    out = run("kmdb-flush", env=env).stdout
    assert "emptied users: 3 rows" in out
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM users")).scalar_one() == 0
        assert conn.execute(text("SELECT name FROM ignored_users")).scalars().all() == ["spammer"]


def test_names_compare_exactly(database_url: str, cli_env: dict[str, str]) -> None:
    run("kmdb-flush", env={**cli_env, "DATABASE_URL": database_url})
    with create_engine(database_url).begin() as conn:
        conn.execute(text("INSERT INTO users (name) VALUES ('bob'), ('bob '), ('Bob'), ('böb')"))
        found = conn.execute(text("SELECT name FROM users WHERE name = 'bob'")).scalars().all()
    assert found == ["bob"]


def test_partition_plan_grows_and_keeps_rows(mysql_url: str, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "DATABASE_URL": mysql_url}
    run("kmdb-flush", env=env)
    engine = create_engine(mysql_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO events (id, t, n, user_id, identity_id) VALUES "
                "(1, '2013-05-01 10:00:00', 1, 1, 1), (2, '2014-02-03 00:00:00', 1, 1, 1), "
                "(3, '2020-01-01 00:00:00', 1, 1, 1)"
            )
        )
    out = run(
        "kmdb-partition",
        "--min-date",
        "2014-01-01",
        "--max-date",
        "2014-03-01",
        "--days",
        "7",
        env=env,
    ).stdout
    assert "events: added 9 partitions, 2014-01-08 to 2014-03-05 (now 10" in out
    for table in ("events", "properties", "aliases"):
        assert _partitions(mysql_url, table) == 10
    again = run(
        "kmdb", "partition", "--max-date", "2014-04-01", env={**env, "KMDB_DAYS_PER_PARTITION": "7"}
    )
    assert "added 4 partitions" in again.stdout
    for table in ("events", "properties", "aliases"):
        assert _partitions(mysql_url, table) == 14
    same = run("kmdb-partition", "--max-date", "2014-04-01", "--days", "7", env=env)
    assert "nothing added" in same.stdout
    assert _partitions(mysql_url, "events") == 14
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM events")).scalar_one() == 3


def test_partition_refuses_a_plan_beyond_the_limit(mysql_url: str, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "DATABASE_URL": mysql_url}
    run("kmdb-flush", env=env)
    result = run(
        "kmdb-partition",
        "--min-date",
        "2014-01-01",
        "--max-date",
        "2114-01-01",
        "--days",
        "1",
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert "limit of 8192 per table" in result.stderr
    assert "Traceback" not in result.stderr
    assert _partitions(mysql_url, "events") == 0


def test_partition_on_sqlite_changes_nothing(sqlite_url: str, cli_env: dict[str, str]) -> None:
    result = run(
        "kmdb-partition",
        "--min-date",
        "2014-01-01",
        "--max-date",
        "2014-03-01",
        env={**cli_env, "DATABASE_URL": sqlite_url},
    )
    assert "Partitioning is a MySQL feature" in result.stdout


@pytest.mark.parametrize(
    ("env_change", "message"),
    [
        ({"DATABASE_URL": "postgresql://h/db"}, "Error: DATABASE_URL uses postgresql://"),
        (
            {"DATABASE_URL": "mysql://root:hunter2@127.0.0.1:1/db"},
            "Error: Cannot connect to the database at mysql+pymysql://root:***@127.0.0.1:1/db",
        ),
    ],
)
def test_bad_configuration_is_one_sentence(
    cli_env: dict[str, str], env_change: dict[str, str], message: str
) -> None:
    result = run("kmdb-flush", env={**cli_env, **env_change}, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith(message)
    assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_dotenv_is_read_but_never_overrides(
    sqlite_url: str, cli_env: dict[str, str], tmp_path
) -> None:
    (tmp_path / ".env").write_text(f"DATABASE_URL={sqlite_url}\nKMDB_QUEUE=a b\n")
    bad = run("kmdb-flush", env=cli_env, check=False)
    assert "KMDB_QUEUE" in bad.stderr
    good = run("kmdb-flush", env={**cli_env, "KMDB_QUEUE": "kmdb-dotenv-test"})
    assert sqlite_url.split("///")[1] in good.stdout


def test_a_command_stops_only_for_a_bad_setting_it_uses(
    sqlite_url: str, cli_env: dict[str, str], tmp_path
) -> None:
    env = {**cli_env, "DATABASE_URL": sqlite_url, "KMDB_QUEUE": "kmdb-lazy-test"}
    run("kmdb-flush", env=env)
    bad = {**env, "KMDB_MIN_DATE": "01/02/2014", "KMDB_BATCH_SIZE": "many"}
    assert "Revisions: 0 known" in run("kmdb-status", env=bad).stdout
    # An import uses nearly every setting: it checks them all before it starts.
    (tmp_path / "export" / "revisions").mkdir(parents=True)
    (tmp_path / "export" / "revisions" / "1.json").write_text('{"_n":"a","_p":"b","_t":1}\n')
    result = run(
        "kmdb-import", "--inline", "--source", str(tmp_path / "export"), env=bad, check=False
    )
    assert result.returncode == 2
    assert result.stderr.startswith("Error: KMDB_MIN_DATE must be a date like 2014-01-31")


@pytest.mark.parametrize(
    ("args", "env_change", "message"),
    [
        (["--min-date", "2014-01-01"], {}, "Error: Set KMDB_MAX_DATE (or --max-date)"),
        (["--max-date", "2014-03-01"], {}, "Error: Set KMDB_MIN_DATE (or --min-date)"),
        (
            ["--min-date", "2015-01-01", "--max-date", "2014-03-01"],
            {},
            "Error: The max date (2014-03-01) is before the min date (2015-01-01)",
        ),
        (
            ["--max-date", "2014-03-01"],
            {"KMDB_MIN_DATE": "2014-13-01"},
            "Error: KMDB_MIN_DATE must be a date",
        ),
    ],
)
def test_partition_dates_missing_or_wrong_are_usage_errors(
    mysql_url: str, cli_env: dict[str, str], args: list[str], env_change: dict, message: str
) -> None:
    env = {**cli_env, "DATABASE_URL": mysql_url, **env_change}
    result = run("kmdb-partition", *args, env=env, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1
    # Checked before anything was made.
    assert inspect(create_engine(mysql_url)).get_table_names() == []


def test_partition_says_an_ignored_min_and_refuses_a_max_before_it(
    mysql_url: str, cli_env: dict[str, str]
) -> None:
    env = {**cli_env, "DATABASE_URL": mysql_url}
    run("kmdb-partition", "--min-date", "2013-01-01", "--max-date", "2013-03-01", env=env)
    assert _partitions(mysql_url, "events") == 10
    wrong = run(
        "kmdb-partition",
        "--min-date",
        "2015-01-01",
        "--max-date",
        "2014-03-01",
        env=env,
        check=False,
    )
    assert wrong.returncode == 2
    assert "is before the min date" in wrong.stderr
    assert _partitions(mysql_url, "events") == 10
    later = run("kmdb-partition", "--min-date", "2013-02-01", "--max-date", "2013-04-01", env=env)
    assert (
        "Note: the min date 2013-02-01 (--min-date) is ignored: the tables are partitioned "
        "already, so new partitions go on from the last boundary, 2013-03-05." in later.stdout
    )
    assert "events: added 4 partitions, 2013-03-12 to 2013-04-02" in later.stdout
    plain = run("kmdb-partition", "--max-date", "2013-04-01", env=env).stdout
    assert "ignored" not in plain
