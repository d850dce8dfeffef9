"""RQ job functions: small, arguments that serialise, the work itself lives elsewhere.

A worker builds its settings from its own environment (DATABASE_URL and the
rest), so every worker of a pool must be started with the same settings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Engine

from kmdb import settings as settings_module
from kmdb.db import make_engine
from kmdb.importer import Counts, import_part, import_revision, scan_revision
from kmdb.load import is_transient
from kmdb.people import Settled, settle
from kmdb.source import open_source

log = logging.getLogger(__name__)
_engines: dict[str, Engine] = {}
T = TypeVar("T")


def _engine() -> tuple[Engine, settings_module.Settings]:
    # Kept for the worker's next jobs: its connections and compiled statements stay warm.
    settings = settings_module.from_env()
    if settings.database_url not in _engines:
        _engines[settings.database_url] = make_engine(settings)
    return _engines[settings.database_url], settings


# Seconds to wait before each new attempt after a transient failure.
BACKOFF = (2, 5, 15, 30, 60, 120)


def _retrying(action: Callable[[], T]) -> T:
    """Run action again after a lost database or S3 connection, with backoff.

    Imports resume from their last commit, so a new attempt loses nothing; any
    other failure (bad configuration, a missing file) fails the job at once.
    """
    for delay in (*BACKOFF, None):
        try:
            return action()
        except Exception as exc:
            if delay is None or not is_transient(exc):
                raise
            log.warning("Transient failure (%s); trying again in %s s", exc, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def import_revision_job(source: str, revision: int, part: int | None = None) -> dict[str, object]:
    """Import one part of a revision file of the export at source (all of it without a part)."""

    def run() -> Counts:
        engine, settings = _engine()
        src = open_source(source, settings)
        if part is None:
            return import_revision(engine, src, revision, settings)
        return import_part(engine, src, revision, part, settings)

    counts = _retrying(run)
    where = f"Revision {revision}" + ("" if part is None else f", part {part}")
    log.info("%s: %s lines, %s events", where, counts.lines, counts.events)
    return {
        "lines": counts.lines,
        "events": counts.events,
        "properties": counts.properties,
        "rejected": counts.rejected,
        "bytes": counts.bytes,
        "timings": counts.timings,
    }


def scan_revision_job(source: str, revision: int) -> int:
    """First pass: record one revision file's alias lines."""

    def run() -> int:
        engine, settings = _engine()
        return scan_revision(engine, open_source(source, settings), revision, settings)

    return _retrying(run)


def settle_job(before_import: bool = False) -> dict[str, int]:
    """Fold new aliases into people and re-point rows (before the import, and once it is in)."""

    def run() -> Settled:
        engine, settings = _engine()
        return settle(engine, tmp_dir=settings.tmp_dir, before_import=before_import)

    result: Settled = _retrying(run)
    return {
        "new_aliases": result.new_aliases,
        "events_moved": result.events_moved,
        "indexes_built": result.indexes_built,
    }
