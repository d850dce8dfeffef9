"""The command line itself: usage lines, help texts, exit codes and what commands print."""

from __future__ import annotations

import tomllib
import uuid
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from sqlalchemy import create_engine, inspect, make_url, text

from kmdb.sample import write_sample
from tests.helpers import REDIS_URL, free_port, mysql_admin, run, sample_bucket
from tests.model import assert_same, dump, expected, read_export

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
COMMANDS = [s.removeprefix("kmdb-") for s in SCRIPTS if s != "kmdb"]


@pytest.mark.parametrize("script", [s for s in SCRIPTS if s != "kmdb"])
def test_each_script_shows_its_own_usage_and_an_example(
    script: str, cli_env: dict[str, str]
) -> None:
    shown = run(script, "--help", env=cli_env).stdout
    assert shown.startswith(f"Usage: {script} [OPTIONS]")
    assert "Example" in shown
    assert run(script, "-h", env=cli_env).stdout == shown
    wrong = run(script, "--no-such-option", env=cli_env, check=False)
    assert wrong.returncode == 2
    assert f"Try '{script} --help' for help." in wrong.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_each_subcommand_keeps_the_group_usage(command: str, cli_env: dict[str, str]) -> None:
    shown = run("kmdb", command, "--help", env=cli_env).stdout
    assert shown.startswith(f"Usage: kmdb {command} [OPTIONS]")
    assert "Example" in shown


def test_the_group_help_lists_every_command_and_an_example(cli_env: dict[str, str]) -> None:
    shown = run("kmdb", "--help", env=cli_env).stdout
    assert shown.startswith("Usage: kmdb [OPTIONS] COMMAND")
    assert "Example" in shown
    for command in COMMANDS:
        assert f"  {command} " in shown


def test_a_script_takes_no_command_name(cli_env: dict[str, str]) -> None:
    result = run("kmdb-flush", "flush", env=cli_env, check=False)
    assert result.returncode == 2
    assert "Usage: kmdb-flush [OPTIONS]" in result.stderr


@pytest.mark.parametrize("command", ["kmdb-status", "kmdb-realias"])
def test_reading_commands_create_no_sqlite_database(
    command: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    result = run(command, env=cli_env, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith(
        "Error: There is no kmdb database at sqlite:///kmdb.sqlite3 yet; make one with kmdb-flush"
    )
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.glob("kmdb.sqlite3*")) == []
    run("kmdb-flush", env={**cli_env, "KMDB_QUEUE": f"kmdb-test-{tmp_path.name}"})
    assert run(command, env=cli_env).returncode == 0


@pytest.mark.parametrize("command", ["kmdb-status", "kmdb-realias"])
def test_reading_commands_create_no_tables_in_mysql(
    command: str, mysql_url: str, cli_env: dict[str, str]
) -> None:
    result = run(command, env={**cli_env, "DATABASE_URL": mysql_url}, check=False)
    assert result.returncode == 2
    assert "Error: There is no kmdb database at mysql+pymysql://" in result.stderr
    assert inspect(create_engine(mysql_url)).get_table_names() == []


def _row_counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        counts = {
            table: conn.execute(text(f"SELECT COUNT(*) FROM `{table}`")).scalar_one()
            for table in ("revisions", "events", "properties", "users", "aliases", "keys")
        }
    engine.dispose()
    return counts


def _imported(mysql_url: str, cli_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    write_sample(tmp_path / "export", 1_500, lines_per_revision=500)
    env = {**cli_env, "DATABASE_URL": mysql_url}
    run("kmdb-import", "--inline", "--source", str(tmp_path / "export"), env=env)
    return env


def test_flush_with_redis_unreachable_changes_nothing(
    mysql_url: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = _imported(mysql_url, cli_env, tmp_path)
    before = _row_counts(mysql_url)
    assert before["events"] > 0
    unreachable = f"redis://127.0.0.1:{free_port()}/7"
    result = run("kmdb-flush", env={**env, "KMDB_REDIS_URL": unreachable}, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith(f"Error: Cannot reach Redis at {unreachable}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""
    assert _row_counts(mysql_url) == before


def _queued(redis_queue: str) -> set[str]:
    q = Queue(redis_queue, connection=Redis.from_url(REDIS_URL))
    return set(q.get_job_ids()) | set(q.deferred_job_registry.get_job_ids())


def test_flush_with_the_database_unreachable_keeps_the_queue(
    mysql_url: str, redis_queue: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    write_sample(tmp_path / "export", 1_500, lines_per_revision=500)
    env = {**cli_env, "DATABASE_URL": mysql_url, "KMDB_QUEUE": redis_queue}
    run("kmdb-import", "--source", str(tmp_path / "export"), env=env)
    jobs = _queued(redis_queue)
    assert jobs
    down = f"mysql+pymysql://root@127.0.0.1:{free_port()}/kmdb"
    result = run("kmdb-flush", env={**env, "DATABASE_URL": down}, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("Error: Cannot connect to the database at")
    assert len(result.stderr.strip().splitlines()) == 1
    assert _queued(redis_queue) == jobs


def test_flush_and_realias_without_write_rights_change_nothing(
    mysql_url: str, redis_queue: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = _imported(mysql_url, {**cli_env, "KMDB_QUEUE": redis_queue}, tmp_path)
    before = _row_counts(mysql_url)
    marker = f"kmdb:{redis_queue}:marker"
    redis = Redis.from_url(REDIS_URL)
    redis.set(marker, b"1")
    database = make_url(mysql_url).database
    user = f"kmdb_ro_{uuid.uuid4().hex[:8]}"
    admin = mysql_admin()
    with admin.cursor() as cursor:
        for host in ("localhost", "127.0.0.1", "%"):
            cursor.execute(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY 'ro-pass'")
            cursor.execute(f"GRANT SELECT ON `{database}`.* TO '{user}'@'{host}'")
    try:
        url = make_url(mysql_url).set(username=user, password="ro-pass")
        read_only = {**env, "DATABASE_URL": url.render_as_string(hide_password=False)}
        flushed = run("kmdb-flush", env=read_only, check=False)
        assert flushed.returncode == 2
        assert flushed.stderr.startswith("Error: kmdb may not empty its tables in the database")
        assert "nothing was changed" in flushed.stderr
        assert len(flushed.stderr.strip().splitlines()) == 1
        realiased = run("kmdb-realias", env=read_only, check=False)
        assert realiased.returncode == 2
        assert realiased.stderr.startswith("Error: kmdb may not recompute people in the database")
    finally:
        with admin.cursor() as cursor:
            for host in ("localhost", "127.0.0.1", "%"):
                cursor.execute(f"DROP USER IF EXISTS '{user}'@'{host}'")
        admin.close()
    assert _row_counts(mysql_url) == before
    assert redis.get(marker) == b"1"


def test_flush_says_what_it_empties_before_it_does(
    mysql_url: str, redis_queue: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = _imported(mysql_url, {**cli_env, "KMDB_QUEUE": redis_queue}, tmp_path)
    rows = sum(count for table, count in _row_counts(mysql_url).items() if table != "keys")
    out = run("kmdb-flush", env=env).stdout.splitlines()
    assert out[0].startswith("Emptying ")
    assert "(keeping ignored_users, whitelisted_events, blacklisted_properties)" in out[0]
    assert f"and the jobs of queue '{redis_queue}' at redis://" in out[0]
    assert rows <= int(out[0].split()[1].replace(",", ""))
    assert _row_counts(mysql_url)["events"] == 0


@pytest.mark.parametrize("inline", [True, False])
def test_a_folder_without_revisions_is_a_wrong_source(
    inline: bool, sqlite_url: str, redis_queue: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    write_sample(tmp_path / "export", 600, lines_per_revision=300)
    (tmp_path / "empty").mkdir()
    env = {**cli_env, "DATABASE_URL": sqlite_url, "KMDB_QUEUE": redis_queue}
    mode = ["--inline"] if inline else []
    empty = run("kmdb-import", *mode, "--source", str(tmp_path / "empty"), env=env, check=False)
    assert empty.returncode == 2
    assert empty.stderr.startswith(
        f"Error: {tmp_path / 'empty'} holds no revisions/N.json; pass the export's folder"
    )
    inner = tmp_path / "export" / "revisions"
    wrong = run("kmdb-import", *mode, "--source", str(inner), env=env, check=False)
    assert wrong.returncode == 2
    assert wrong.stderr.startswith(
        f"Error: {inner} holds revision files itself, so it is the revisions/ folder; "
        f"pass its parent, {tmp_path / 'export'}, which is the export"
    )
    for result in (empty, wrong):
        assert len(result.stderr.strip().splitlines()) == 1
    assert not _queued(redis_queue)
    # The right folder, once imported, has nothing new: that is no error.
    run("kmdb-import", "--inline", "--source", str(tmp_path / "export"), env=env)
    again = run("kmdb-import", *mode, "--source", str(tmp_path / "export"), env=env)
    assert ("Imported 0 revisions" if inline else "Nothing new to import") in again.stdout


def test_a_bucket_prefix_without_revisions_is_a_wrong_source(
    sqlite_url: str, s3_env: dict[str, str], cli_env: dict[str, str], tmp_path: Path
) -> None:
    bucket = sample_bucket(tmp_path / "export", 300, prefix="km/")
    env = {**cli_env, **s3_env, "DATABASE_URL": sqlite_url}
    for spec in (f"s3://{bucket}", f"s3://{bucket}/other", f"s3://{bucket}/km/revisions"):
        result = run("kmdb-import", "--inline", "--source", spec, env=env, check=False)
        assert result.returncode == 2, spec
        assert result.stderr.startswith(f"Error: {spec} holds no revisions/N.json"), spec
    run("kmdb-import", "--inline", "--source", f"s3://{bucket}/km", env=env)


def test_inline_import_prints_a_summary(
    sqlite_url: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    sample = run("kmdb-sample", str(folder), "--lines", "3000", "--seed", "2", env=cli_env)
    assert "Wrote 3,000 lines in revisions 1-2" in sample.stdout
    env = {**cli_env, "DATABASE_URL": sqlite_url}
    out = run("kmdb-import", "--inline", "--source", str(folder), env=env).stdout
    wanted = expected(read_export(folder))
    assert f"revisions  {2:>12,}" in out
    assert f"events     {sum(wanted.events.values()):>12,}" in out
    assert f"rejected   {len(wanted.rejected):>12,}" in out
    assert_same(dump(create_engine(sqlite_url)), wanted)
