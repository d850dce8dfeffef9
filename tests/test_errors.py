"""kmdb.errors: which failures are transient, and how a command ends on each (with --traceback too)."""

from __future__ import annotations

import subprocess
import sys

import pymysql
import pytest
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from kmdb.errors import (
    ConcurrentImport,
    ConfigError,
    DatabaseUnavailable,
    Exit,
    JobsFailed,
    KmdbError,
    LocalInfileRefused,
    LockBusy,
    NoDatabase,
    RedisUnavailable,
    ReportError,
    SampleError,
    SourceError,
    Stopped,
    Unreadable,
    concerns_one_file,
    exit_status,
    is_lock_conflict,
    is_transient,
)


def _driver(error: type[DBAPIError], code: int, message: str) -> DBAPIError:
    return error("SELECT 1", {}, pymysql.err.OperationalError(code, message))


@pytest.mark.parametrize(
    ("exc", "end"),
    [
        (ConfigError("Set DATABASE_URL."), Exit(2, "Error: Set DATABASE_URL.")),
        (NoDatabase("sqlite:///x"), Exit(2, f"Error: {NoDatabase('sqlite:///x')}")),
        (DatabaseUnavailable("No database."), Exit(2, "Error: No database.")),
        (LocalInfileRefused(4166, "off"), Exit(2, f"Error: {LocalInfileRefused(4166, 'off')}")),
        (ReportError("Bad range."), Exit(2, "Error: Bad range.")),
        (
            SampleError("lines must be at least 1, not 0"),
            Exit(2, "Error: lines must be at least 1, not 0"),
        ),
        (KmdbError("Cannot."), Exit(1, "Error: Cannot.")),
        (SourceError("Gone."), Exit(1, "Error: Gone.")),
        (RedisUnavailable("No Redis.", "idle"), Exit(1, "Error: No Redis.")),
        (JobsFailed(2), Exit(1, "Error: 2 jobs failed; see kmdb-status.")),
        (
            JobsFailed(1, ["q-import-3"]),
            Exit(1, "Error: 1 jobs failed: q-import-3; see kmdb-status."),
        ),
        (
            Stopped(3, 7),
            Exit(
                0,
                "Stopped on request after line 7 of revision 3. Run kmdb-import again to go on from there.",
            ),
        ),
        (
            _driver(ProgrammingError, 1146, "Table 'kmdb.x' doesn't exist"),
            Exit(1, "Error: the database refused a statement: Table 'kmdb.x' doesn't exist."),
        ),
        (SystemExit(None), Exit(0)),
        (SystemExit(3), Exit(3)),
        (SystemExit("Leaving."), Exit(1, "Leaving.")),
        (ValueError("a bug of kmdb's"), None),
        (KeyError("users"), None),
    ],
)
def test_each_failure_ends_a_command_with_its_status_and_one_sentence(
    exc: BaseException, end: Exit | None
) -> None:
    assert exit_status(exc) == end


def test_errors_carry_their_facts() -> None:
    stopped = Stopped(3, 7)
    assert (stopped.revision, stopped.line) == (3, 7)
    moved = ConcurrentImport(2, 0, 41)
    assert (moved.revision, moved.part, moved.line) == (2, 0, 41)
    assert str(moved).startswith("Revision 2 (part 0) was moved past line 41 by another worker")
    busy = LockBusy("kmdb:x:settle", 0)
    assert (busy.name, busy.wait) == ("kmdb:x:settle", 0)
    assert str(busy) == "Could not take the lock kmdb:x:settle within 0 s; another worker holds it."
    unreadable = Unreadable.of_job(["revision 3: gone."], 5, "parts")
    assert (unreadable.failures, unreadable.count) == (["revision 3: gone."], 5)
    assert str(unreadable) == "1 of 5 parts could not be read: revision 3: gone."
    failed = JobsFailed(2, ["a", "b"])
    assert (failed.count, failed.ids) == (2, ["a", "b"])
    assert isinstance(SampleError("x"), ValueError)  # write_sample's callers catch ValueError


def _caused(exc: BaseException, cause: BaseException) -> BaseException:
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (DatabaseUnavailable("down"), True),
        (RedisUnavailable("down"), True),
        (ConnectionResetError(), True),
        (_driver(OperationalError, 2013, "Lost connection to server during query"), True),
        (_driver(OperationalError, 2003, "Can't connect"), True),
        (_driver(OperationalError, 1213, "Deadlock found"), True),
        (_driver(OperationalError, 1205, "Lock wait timeout exceeded"), True),
        (_driver(ProgrammingError, 1064, "You have an error in your SQL syntax"), False),
        (_caused(SourceError("Cannot read revision 3."), ConnectionResetError()), True),
        (SourceError("Cannot read revision 3: NoSuchKey."), False),
        (_caused(LocalInfileRefused(4166, "off"), _driver(OperationalError, 4166, "off")), False),
        (ConfigError("Set DATABASE_URL."), False),
        (ValueError("no"), False),
    ],
)
def test_transient_failures_are_told_from_terminal_ones(
    exc: BaseException, transient: bool
) -> None:
    assert is_transient(exc) is transient


def test_botocore_network_failures_are_transient() -> None:
    from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

    assert is_transient(EndpointConnectionError(endpoint_url="http://s3"))
    assert is_transient(ReadTimeoutError(endpoint_url="http://s3"))


def test_deciding_does_not_load_botocore() -> None:
    # The decision sits below the database writer and every stage: it must not make
    # a process that never reads S3 load botocore.
    code = (
        "import sys; from kmdb.errors import is_transient, concerns_one_file; "
        "from kmdb.load import bulk; "
        "assert not is_transient(ValueError()); assert not concerns_one_file(ValueError()); "
        "print('botocore' in sys.modules)"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "False"


def test_only_deadlocks_and_lock_waits_are_lock_conflicts() -> None:
    assert is_lock_conflict(_driver(OperationalError, 1213, "Deadlock found"))
    assert is_lock_conflict(_driver(OperationalError, 1205, "Lock wait timeout exceeded"))
    assert not is_lock_conflict(_driver(OperationalError, 2013, "Lost connection"))
    assert not is_lock_conflict(DatabaseUnavailable("down"))


def test_a_file_that_cannot_be_read_concerns_that_file_alone_unless_the_network_failed() -> None:
    assert concerns_one_file(SourceError("Cannot read revision 3: NoSuchKey."))
    assert not concerns_one_file(
        _caused(SourceError("Cannot read revision 3."), ConnectionResetError())
    )
    assert not concerns_one_file(KmdbError("Revision 3 has no part 1."))
