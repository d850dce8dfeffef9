"""The command line itself: usage lines, help texts, exit codes and what commands print."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from tests.helpers import run

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
