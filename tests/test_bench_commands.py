"""kmdb.bench.commands: kmdb's commands run with the benchmark's own settings, failures with their log."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kmdb.bench.commands import check_call, command, environment
from kmdb.errors import BenchError


def test_only_the_passed_on_settings_of_the_callers_environment_reach_kmdb(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KMDB_BATCH_SIZE", "123")
    monkeypatch.setenv("KMDB_QUEUE", "the-callers")
    monkeypatch.setenv("DATABASE_URL", "sqlite:///callers.sqlite3")
    monkeypatch.setenv("AWS_PROFILE", "production")
    env = environment({"KMDB_REDIS_URL": "redis://here"}, KMDB_QUEUE="the-benchmarks")
    assert env["KMDB_BATCH_SIZE"] == "123"
    assert env["KMDB_QUEUE"] == "the-benchmarks"
    assert env["KMDB_REDIS_URL"] == "redis://here"
    assert "DATABASE_URL" not in env and "AWS_PROFILE" not in env
    assert env["PATH"]


def test_a_command_that_fails_raises_with_the_tail_of_its_log(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    check_call([sys.executable, "-c", "print('fine')"], {}, tmp_path, log)
    script = "import sys; print('\\n'.join(map(str, range(50)))); sys.exit(3)"
    with pytest.raises(BenchError) as failed:
        check_call([sys.executable, "-c", script], {}, tmp_path, log)
    said = str(failed.value)
    assert said.startswith(f"{sys.executable} -c {script} exited with 3:\n")
    # The last 30 lines of the log, the first command's output long gone from them.
    assert said.splitlines()[1:] == [str(n) for n in range(20, 50)]
    assert log.read_text().startswith(f"$ {sys.executable} -c print('fine')\nfine\n")


def test_kmdbs_commands_are_the_console_scripts_next_to_the_interpreter() -> None:
    (script,) = command("status")
    assert Path(script) == Path(sys.executable).parent / "kmdb-status"
