"""kmdb's one error model: its exceptions, which failures are worth retrying, and exit statuses.

Library code raises these classes, each with the facts of its failure as
attributes and a message that is one sentence for the user. Two questions are
answered here and nowhere else: whether a failure is transient (a lost
connection, a deadlock: worth another attempt, see kmdb.retry) or terminal, and
which exit status and sentence a command ends with (`exit_status`).

Nothing here imports a driver: a failure of botocore, SQLAlchemy or PyMySQL is
recognised by its class only once that library has been loaded, since no
exception of a library that was never imported can be raised.
"""

from __future__ import annotations

import sys
from typing import NamedTuple


class KmdbError(Exception):
    """Something kmdb cannot do; the message is a sentence for the user."""


class ConfigError(KmdbError):
    """A setting is missing or malformed; the message says what to set."""


class TransientError(KmdbError):
    """A failure worth retrying: a lost connection, a deadlock, a throttled request."""


class SourceError(KmdbError):
    """The export cannot be read (missing bucket or folder, access denied)."""


class PartitionError(KmdbError):
    """A partition plan cannot be applied (too many partitions, bad dates)."""


class PartitionDatesError(PartitionError, ConfigError):
    """The partition dates are missing or out of order: a usage error."""


class DatabaseUnavailable(ConfigError, TransientError):
    """The database cannot be reached: a setting to check from the command line, a wait for a worker."""


class LocalInfileRefused(ConfigError):
    """The database server refuses LOAD DATA LOCAL INFILE (`code`, its `reason`): a server setting to change."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(
            "The database server refuses LOAD DATA LOCAL INFILE, which kmdb loads rows with; set "
            "local_infile=ON in the server's configuration (or SET GLOBAL local_infile = 1) and "
            "run the import again."
        )
        self.code = code
        self.reason = reason


class NoDatabase(ConfigError):
    """There is no kmdb database at DATABASE_URL yet, and the command only reads."""

    def __init__(self, where: str) -> None:
        super().__init__(
            f"There is no kmdb database at {where} yet; make one with kmdb-flush, or import an "
            "export with kmdb-import --source FOLDER|s3://BUCKET (check DATABASE_URL if it "
            "should be there)."
        )
        self.where = where


class NoRevisions(ConfigError):
    """The source holds no revisions/N.json at all: most likely a wrong --source."""

    def __init__(self, source: str, parent: str | None = None) -> None:
        if parent is not None:
            message = (
                f"{source} holds revision files itself, so it is the revisions/ folder; "
                f"pass its parent, {parent}, which is the export (--source or KMDB_SOURCE)."
            )
        else:
            message = (
                f"{source} holds no revisions/N.json; pass the export's folder (the one that "
                "holds revisions/) or s3://bucket/prefix with --source, KMDB_SOURCE or AWS_BUCKET."
            )
        super().__init__(message)
        self.source = source
        self.parent = parent


class Unreadable(KmdbError):
    """Some files could not be read (`failures`, one sentence each, of `count`); the others were imported."""

    def __init__(self, message: str, failures: list[str], count: int) -> None:
        super().__init__(message)
        self.failures = failures
        self.count = count

    @classmethod
    def of_job(cls, failures: list[str], count: int, noun: str) -> Unreadable:
        """The files of one job (its `noun`: revisions or parts) that could not be read."""
        return cls(
            f"{len(failures)} of {count} {noun} could not be read: {'; '.join(failures)}",
            failures,
            count,
        )

    @classmethod
    def of_run(cls, failures: list[str], count: int) -> Unreadable:
        """The revisions of an import in one process that could not be read."""
        return cls(
            f"{len(failures)} of {count} revisions could not be read and were not imported (the "
            f"others were): {'; '.join(failures)} See SELECT number, error FROM revisions WHERE "
            "status = 'failed'; kmdb-import tries them again.",
            failures,
            count,
        )


class Stopped(KmdbError):
    """The import was asked to stop (after `line` of `revision`); what it committed stays."""

    def __init__(self, revision: int, line: int) -> None:
        super().__init__(f"Stopped on request after line {line} of revision {revision}.")
        self.revision = revision
        self.line = line


class ConcurrentImport(KmdbError):
    """Another worker moved a part (`revision`, `part`) past `line` while this one worked on it."""

    def __init__(self, revision: int, part: int, line: int) -> None:
        super().__init__(
            f"Revision {revision} (part {part}) was moved past line {line} by another worker; "
            "this worker stops working on it."
        )
        self.revision = revision
        self.part = part
        self.line = line


class LockBusy(KmdbError):
    """Another connection holds the lock `name`, and the caller waited only `wait` seconds."""

    def __init__(self, name: str, wait: float) -> None:
        super().__init__(
            f"Could not take the lock {name} within {wait:.0f} s; another worker holds it."
        )
        self.name = name
        self.wait = wait


class NoProgress(KmdbError):
    """Jobs are left that nothing runs: no live worker takes them."""

    def __init__(self, message: str, jobs: int, queue: str) -> None:
        super().__init__(message)
        self.jobs = jobs
        self.queue = queue


class JobsFailed(KmdbError):
    """Jobs of an import failed (`count` of them; their `ids` where known)."""

    def __init__(self, count: int, ids: list[str] | None = None) -> None:
        named = f": {', '.join(ids)}" if ids else ""
        super().__init__(f"{count} jobs failed{named}; see kmdb-status.")
        self.count = count
        self.ids = ids or []


class RedisUnavailable(TransientError):
    """Redis did not answer for longer than a worker waits; `doing` says what the worker was doing."""

    def __init__(self, message: str, doing: str = "") -> None:
        super().__init__(message)
        self.doing = doing


class NotPrivate(KmdbError):
    """A folder kmdb keeps copies of an export in is not this user's alone (`path`)."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class ReportError(ConfigError):
    """A report's options cannot be used (a range, period, bucket or step list); exit status 2."""


class SampleError(ConfigError, ValueError):
    """A sample's arguments cannot be used (a count below its least, times out of range)."""


class BenchError(KmdbError):
    """A benchmark's import did not finish, or did not give the rows it should (bin/bench)."""


class DetachedError(KmdbError):
    """A method that queries was called on an object of kmdb.models that belongs to no session."""


# --- Transient or terminal ----------------------------------------------------

# MySQL's deadlock and lock-wait-timeout errors: the statement is safe to retry.
LOCK_CONFLICTS = frozenset({1205, 1213})
# MySQL client errors for a server that went away or cannot be reached (yet).
CONNECTION_LOST = frozenset({2003, 2006, 2013, 2055})


def _loaded(module: str, *names: str) -> tuple[type, ...]:
    """Exception classes of a library, if it has been imported (else none can be raised)."""
    found = sys.modules.get(module)
    return tuple(getattr(found, name) for name in names) if found is not None else ()


def driver_error(exc: BaseException) -> tuple[int | None, str]:
    """The database driver's error number and message behind a SQLAlchemy error, where given."""
    args = getattr(getattr(exc, "orig", None), "args", None) or ()
    code = args[0] if args and isinstance(args[0], int) else None
    return code, str(args[-1]) if args else str(exc)


def is_lock_conflict(exc: BaseException) -> bool:
    """Whether a statement failed on a deadlock or a lock-wait timeout: run it again at once."""
    operational = _loaded("sqlalchemy.exc", "OperationalError")
    return (
        bool(operational)
        and isinstance(exc, operational)
        and driver_error(exc)[0] in LOCK_CONFLICTS
    )


def is_transient(exc: BaseException) -> bool:
    """Whether a failure is worth retrying: a lost connection, a deadlock, a network error."""
    if isinstance(exc, (TransientError, ConnectionError)):
        return True
    invalidated = _loaded("sqlalchemy.exc", "DBAPIError")
    if (
        invalidated
        and isinstance(exc, invalidated)
        and getattr(exc, "connection_invalidated", False)
    ):
        return True
    if isinstance(exc, _loaded("botocore.exceptions", "ConnectionError", "ReadTimeoutError")):
        return True
    cause = exc.__cause__
    if cause is not None and cause is not exc and is_transient(cause):
        return True
    orig = getattr(exc, "orig", None)
    code = orig.args[0] if orig is not None and getattr(orig, "args", None) else None
    return code in LOCK_CONFLICTS or code in CONNECTION_LOST


def concerns_one_file(exc: BaseException) -> bool:
    """Whether a failure concerns one revision file alone (it cannot be read, or is gone), so
    that the other files of a job or run go on; other failures stop it."""
    return isinstance(exc, SourceError) and not is_transient(exc)


# --- Exit statuses ------------------------------------------------------------


class Exit(NamedTuple):
    """How a command ends: its status, and what it says last (stderr unless the status is 0)."""

    status: int
    message: str = ""


def exit_status(exc: BaseException) -> Exit | None:
    """How a command ends on exc; None for a failure that is kmdb's own bug (a traceback then).

    Usage and configuration errors exit 2, other failures 1; a stop on request is
    no failure. A SystemExit keeps its status (a message as its code exits 1).
    """
    if isinstance(exc, SystemExit):
        code = exc.code
        if code is None or isinstance(code, int):
            return Exit(code or 0)
        return Exit(1, str(code))
    if isinstance(exc, Stopped):  # Ctrl-C or SIGTERM: the next run goes on from there
        return Exit(0, f"{exc} Run kmdb-import again to go on from there.")
    if isinstance(exc, ConfigError):
        return Exit(2, f"Error: {exc}")
    if isinstance(exc, KmdbError):
        return Exit(1, f"Error: {exc}")
    if isinstance(exc, _loaded("sqlalchemy.exc", "DBAPIError")):
        args = getattr(getattr(exc, "orig", None), "args", None)
        reason = args[-1] if args else exc
        return Exit(1, f"Error: the database refused a statement: {reason}.")
    return None
