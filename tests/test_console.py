"""kmdb.console: how every command ends (a sentence, its status, or the whole trace when asked), its settings and masked output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from kmdb.cli import cli
from kmdb.console import date_option, friendly, load_settings
from kmdb.errors import (
    ConfigError,
    Stopped,
)


@click.command()
@click.argument("kind")
@friendly
def _fail(kind: str) -> None:
    raise {
        "config": ConfigError("Set DATABASE_URL, e.g. sqlite:///kmdb.sqlite3."),
        "stopped": Stopped(3, 7),
        "bug": ValueError("a bug"),
    }[kind]


def test_a_command_ends_in_one_sentence_or_its_status() -> None:
    runner = CliRunner()
    result = runner.invoke(_fail, ["config"])
    assert result.exit_code == 2
    assert result.stderr == "Error: Set DATABASE_URL, e.g. sqlite:///kmdb.sqlite3.\n"
    assert result.stdout == ""
    stopped = runner.invoke(_fail, ["stopped"])
    assert stopped.exit_code == 0
    assert stopped.stdout.startswith(
        "Stopped on request after line 7 of revision 3. Run kmdb-import"
    )
    assert stopped.stderr == ""
    # A failure kmdb does not know is a bug: it keeps its traceback.
    bug = runner.invoke(_fail, ["bug"])
    assert isinstance(bug.exception, ValueError)


def _no_database(tmp_path: Path) -> dict[str, str]:
    return {"DATABASE_URL": f"sqlite:///{tmp_path / 'missing.sqlite3'}", "KMDB_DEBUG": ""}


def test_kmdb_traceback_shows_the_whole_trace_instead_of_the_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the project's
    runner = CliRunner()
    plain = runner.invoke(cli, ["status"], env=_no_database(tmp_path))
    assert plain.exit_code == 2
    assert plain.stderr.startswith("Error: There is no kmdb database at sqlite:///")
    assert "Traceback" not in plain.stderr
    traced = runner.invoke(cli, ["--traceback", "status"], env=_no_database(tmp_path))
    assert traced.exit_code == 2
    assert traced.stderr.startswith("Traceback (most recent call last):")
    assert "open_existing" in traced.stderr
    assert "kmdb.errors.NoDatabase: There is no kmdb database at sqlite:///" in traced.stderr
    assert "\nError: " not in traced.stderr


@pytest.mark.parametrize(
    ("value", "traced"), [("1", True), ("yes", True), ("0", False), ("", False)]
)
def test_kmdb_debug_shows_the_trace_of_any_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, traced: bool
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {**_no_database(tmp_path), "KMDB_DEBUG": value}
    result = CliRunner().invoke(cli, ["status"], env=env)
    assert result.exit_code == 2
    assert result.stderr.startswith("Traceback") is traced
    assert result.stderr.startswith("Error: There is no kmdb database") is not traced


def test_the_console_scripts_take_kmdb_debug_too(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("kmdb-status")
    env = {"PATH": str(script.parent), "HOME": str(tmp_path), **_no_database(tmp_path)}
    plain = subprocess.run([script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert plain.returncode == 2
    assert plain.stderr.startswith("Error: There is no kmdb database")
    traced = subprocess.run(
        [script], capture_output=True, text=True, env={**env, "KMDB_DEBUG": "1"}, cwd=tmp_path
    )
    assert traced.returncode == 2
    assert traced.stderr.startswith("Traceback (most recent call last):")


def test_what_a_command_prints_has_the_passwords_of_its_settings_masked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the project's
    monkeypatch.setenv("DATABASE_URL", "mysql://kmdb:db-s3cret@db.example/kmdb")
    monkeypatch.setenv("KMDB_REDIS_URL", "redis://:redis-s3cret@localhost:6379/0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-s3cret")
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # put back after the test
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    load_settings()
    print("connecting as kmdb:db-s3cret, redis-s3cret and aws-s3cret")
    print("a driver said: access denied for db-s3cret", file=sys.stderr)
    out, err = capsys.readouterr()
    assert out == "connecting as kmdb:***, *** and ***\n"
    assert err == "a driver said: access denied for ***\n"


def test_a_date_option_takes_a_day_or_says_what_it_wants() -> None:
    @click.command()
    @date_option("--since", "KMDB_SINCE", "The first day")
    def show(since: object) -> None:
        click.echo(repr(since))

    runner = CliRunner()
    assert runner.invoke(show, ["--since", "2014-01-31"]).output == "datetime.date(2014, 1, 31)\n"
    assert runner.invoke(show, []).output == "None\n"
    bad = runner.invoke(show, ["--since", "31/01/2014"])
    assert bad.exit_code == 2
    assert "'31/01/2014' is not a date like 2014-01-31." in bad.output
    assert "The first day (default $KMDB_SINCE)." in runner.invoke(show, ["--help"]).output


def test_exit_now_leaves_at_once_with_the_status_and_message(tmp_path: Path) -> None:
    code = (
        "import atexit, sys\n"
        "from kmdb.console import exit_now\n"
        "atexit.register(lambda: print('teardown ran'))\n"
        "print('before', flush=True)\n"
        "exit_now(sys.argv[1] if not sys.argv[1].isdigit() else int(sys.argv[1]))\n"
    )
    quiet = subprocess.run([sys.executable, "-c", code, "3"], capture_output=True, text=True)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (3, "before\n", "")
    said = subprocess.run([sys.executable, "-c", code, "Leaving."], capture_output=True, text=True)
    assert (said.returncode, said.stdout, said.stderr) == (1, "before\n", "Leaving.\n")
