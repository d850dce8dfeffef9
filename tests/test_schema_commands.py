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
        ({"KMDB_BATCH_SIZE": "many"}, "Error: KMDB_BATCH_SIZE must be a whole number"),
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
    (tmp_path / ".env").write_text(f"DATABASE_URL={sqlite_url}\nKMDB_BATCH_SIZE=many\n")
    bad = run("kmdb-flush", env=cli_env, check=False)
    assert "KMDB_BATCH_SIZE" in bad.stderr
    good = run("kmdb-flush", env={**cli_env, "KMDB_BATCH_SIZE": "10"})
    assert sqlite_url.split("///")[1] in good.stdout
