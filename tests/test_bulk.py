"""kmdb.load.bulk: rows staged in private files and loaded with LOAD DATA LOCAL, and what a server that refuses it says."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, select, text

from kmdb.load import schema
from kmdb.load.bulk import load_staged, remove_stale_load_files, stage_rows
from kmdb.load.database import create_schema
from kmdb.sample import write_sample
from kmdb.settings import Settings
from tests.helpers import (
    burst_workers,
    line,
    run,
    run_import,
    running_mariadb,
    write_export,
)
from tests.model import dump, expected, read_export


def test_staged_files_are_removed_and_rows_arrive(engine: Engine, tmp_path: Path) -> None:
    create_schema(engine)
    # A tab, a backslash before N (not NULL) and a NUL: what LOAD DATA must not misread.
    staged = stage_rows(
        engine,
        schema.alias_sightings,
        ("revision", "line", "name1", "name2", "t"),
        [(1, 1, "ab\tc", "n\\N\0", "2014-01-01 00:00:00")],
        str(tmp_path),
    )
    if staged.path is not None:  # MySQL: the file LOAD DATA LOCAL reads
        assert Path(staged.path).parent == tmp_path
        assert Path(staged.path).is_file()
        assert Path(staged.path).stat().st_mode & 0o777 == 0o600  # a private export's rows
    with engine.begin() as conn:
        load_staged(conn, staged)
    staged.discard()
    assert list(tmp_path.glob("kmdb-*.tsv")) == []
    with engine.connect() as conn:
        got = conn.execute(
            select(schema.alias_sightings.c.name1, schema.alias_sightings.c.name2)
        ).one()
    assert tuple(got) == ("ab\tc", "n\\N\0")


def test_load_files_that_killed_processes_left_are_removed(tmp_path: Path) -> None:
    old = tmp_path / f"kmdb-properties-4242-{'a' * 32}.tsv"
    fresh = tmp_path / f"kmdb-events-4243-{'b' * 32}.tsv"
    not_ours = tmp_path / "kmdb-notes.tsv"
    for path in (old, fresh, not_ours):
        path.write_text("1\t2\n")
    two_hours_ago = time.time() - 7200
    for path in (old, not_ours):
        os.utime(path, (two_hours_ago, two_hours_ago))
    assert remove_stale_load_files(str(tmp_path)) == 1
    assert not old.exists()
    assert fresh.exists()  # a live process's chunk, in the middle of its load
    assert not_ours.exists()
    assert remove_stale_load_files(str(tmp_path / "missing")) == 0


# --- A server that refuses LOAD DATA LOCAL (MySQL 8's default, MariaDB's --local-infile=0) ---

REFUSED = (
    "Error: The database server refuses LOAD DATA LOCAL INFILE, which kmdb loads rows with; "
    "set local_infile=ON in the server's configuration (or SET GLOBAL local_infile = 1) and "
    "run the import again."
)


@pytest.fixture(scope="module")
def no_local_infile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A MariaDB server of this module's own started with --local-infile=0; yields its URL."""
    with running_mariadb(tmp_path_factory.mktemp("mariadb"), "--local-infile=0") as server:
        yield server.url


def _fresh(url: str) -> None:
    """Empty the private server's kmdb database, so each test starts from none."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP DATABASE IF EXISTS kmdb"))
        conn.execute(text("CREATE DATABASE kmdb"))
    engine.dispose()


def test_an_inline_import_on_a_server_without_local_infile_is_one_sentence(
    no_local_infile_server: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    _fresh(no_local_infile_server)
    write_sample(tmp_path / "export", 1_000, seed=6, lines_per_revision=500)
    env = {**cli_env, "DATABASE_URL": no_local_infile_server}
    result = run(
        "kmdb-import", "--inline", "--source", str(tmp_path / "export"), env=env, check=False
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == REFUSED, result.stderr


def test_a_job_on_a_server_without_local_infile_fails_once_with_the_sentence(
    no_local_infile_server: str, redis_queue: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    _fresh(no_local_infile_server)
    folder = tmp_path / "export"
    write_sample(folder, 1_000, seed=7, lines_per_revision=1_000)
    env = {**cli_env, "DATABASE_URL": no_local_infile_server, "KMDB_QUEUE": redis_queue}
    run("kmdb-import", "--source", str(folder), env=env)
    (worker,) = burst_workers(1, env)
    said = worker.stdout + worker.stderr
    # Refused is final: the job is not retried while the worker waits out an outage.
    assert "Lost the database" not in said and "Waiting for the database" not in said, said
    status = run("kmdb-status", env=env).stdout
    jobs = next(line for line in status.splitlines() if line.startswith("Jobs on queue"))
    assert "0 queued, 0 started" in jobs and "0 failed" not in jobs, status
    assert f"LocalInfileRefused: {REFUSED.removeprefix('Error: ')}" in status, status


def test_a_refused_local_infile_is_not_retried() -> None:
    from kmdb.errors import ConfigError, LocalInfileRefused, is_transient

    refused = LocalInfileRefused(4166, "disabled the local infile capability")
    assert isinstance(refused, ConfigError)  # the CLI's exit 2
    assert (refused.code, refused.reason) == (4166, "disabled the local infile capability")
    assert not is_transient(refused)


def test_names_with_awkward_characters_round_trip(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    awkward = [
        "tab\there",
        "new\nline",
        "back\\slash",
        'quo"te',
        "nul\0byte",
        "emoji 😀",
        "trail ",
        "\\N",
        "cr\r",
    ]
    folder = write_export(
        tmp_path / "export",
        {
            1: [
                line(_n=name, _p=name, _t=1_000_000 + i, **{name: name})
                for i, name in enumerate(awkward)
            ]
        },
    )
    run_import(engine, folder, settings)
    result = dump(engine)
    assert sorted(result.events) == sorted(
        (e[0], e[1], e[2], e[3]) for e in expected(read_export(folder)).events
    )
    assert {e[2] for e in result.events} == set(awkward)
    assert {e[3] for e in result.events} == {((n, n),) for n in awkward}
