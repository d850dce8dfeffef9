"""A KM export as kmdb reads it: revision files by number, from a folder or a bucket.

`Source` is what the passes read from; `open_source` picks the source that
--source (or KMDB_SOURCE, AWS_BUCKET) names; `find_new` finds the revisions
that are not imported yet, per the contract's "Finding work".
"""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from types import EllipsisType
from typing import Protocol

from kmdb.errors import ConfigError
from kmdb.extract.local import LocalSource
from kmdb.extract.s3 import S3Source
from kmdb.settings import Settings


class Source(Protocol):
    """A KM export: revision files by number."""

    name: str

    def list_revisions(self) -> list[int] | None:
        """Revision numbers present, sorted; None when listing is not allowed."""

    def exists(self, revision: int) -> bool:
        """Whether revisions/N.json is there."""

    def size(self, revision: int) -> int | None:
        """The file's size in bytes, if known."""

    def chunks(self, revision: int, offset: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The file's bytes from offset up to end (or its end), in chunks."""

    def read_text(self, name: str) -> str | None:
        """A small file at the export's top (index.csv, status.csv), or None if missing."""


def open_source(spec: str | None, settings: Settings) -> Source:
    """The source named by --source, KMDB_SOURCE or AWS_BUCKET."""
    spec = spec or settings.source
    if not spec:
        raise ConfigError(
            "No export to import: pass --source (a folder or s3://bucket), "
            "or set KMDB_SOURCE or AWS_BUCKET."
        )
    if spec.startswith("s3://"):
        return S3Source(spec, settings)
    return LocalSource(spec)


def find_new(
    source: Source,
    done: set[int],
    settings: Settings,
    start: int,
    unfinished: AbstractSet[int] = frozenset(),
    listed: list[int] | None | EllipsisType = ...,
) -> list[int]:
    """Revision numbers to import, per the contract's "Finding work".

    `unfinished` are revisions begun earlier; where the bucket cannot be listed
    they are taken as they are, and probing starts after the last finished one.
    `listed` is the source's listing if the caller has it already.
    """
    if listed is ...:
        listed = source.list_revisions()
    if listed is not None:
        return [n for n in listed if n >= settings.min_revision and n not in done]
    # Listing is denied: probe upwards until LOOKAHEAD numbers in a row are missing.
    found = sorted(n for n in unfinished if n >= settings.min_revision and n < start)
    missing, n = 0, max(start, settings.min_revision)
    while missing < settings.revision_lookahead:
        if n in done:
            missing = 0
        elif source.exists(n):
            found.append(n)
            missing = 0
        else:
            missing += 1
        n += 1
    return found
