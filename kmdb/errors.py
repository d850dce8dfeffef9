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


class TransientError(KmdbError):
    """A failure worth retrying: a lost connection, a deadlock, a throttled request."""


class DatabaseUnavailable(ConfigError):
    """The database cannot be reached: a setting to check from the command line, a wait for a worker."""


class ReportError(ConfigError):
    """A report's options cannot be used (a range, period, bucket or step list); exit status 2."""
