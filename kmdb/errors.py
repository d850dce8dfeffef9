"""Exceptions that kmdb raises; the CLI turns them into one-line messages."""

from __future__ import annotations


class KmdbError(Exception):
    """Something kmdb cannot do; the message is a sentence for the user."""


class ConfigError(KmdbError):
    """A setting is missing or malformed; the message says what to set."""


class SourceError(KmdbError):
    """The export cannot be read (missing bucket or folder, access denied)."""


class PartitionError(KmdbError):
    """A partition plan cannot be applied (too many partitions, bad dates)."""


class PartitionDatesError(PartitionError, ConfigError):
    """The partition dates are missing or out of order: a usage error."""


class TransientError(KmdbError):
    """A failure worth retrying: a lost connection, a deadlock, a throttled request."""


class DatabaseUnavailable(ConfigError):
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


class NoProgress(KmdbError):
    """Jobs are left that nothing runs: no live worker takes them."""

    def __init__(self, message: str, jobs: int, queue: str) -> None:
        super().__init__(message)
        self.jobs = jobs
        self.queue = queue


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
