"""RQ job functions: small, arguments that serialise, the work itself lives elsewhere.

A worker builds its settings from its own environment (DATABASE_URL and the
rest), so every worker of a pool must be started with the same settings.
kmdb.orchestrate.graph enqueues these functions by their dotted path.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from rq import get_current_job
from sqlalchemy import Engine

from kmdb import settings as settings_module
from kmdb.errors import LockBusy, is_transient
from kmdb.extract.export import open_source
from kmdb.faults import pause
from kmdb.load.engine import make_engine
from kmdb.load.ledger import Counts
from kmdb.load.locks import LockSet
from kmdb.load.repoint import repoint_pending
from kmdb.load.settle import Settled, settle
from kmdb.orchestrate.job_meta import lock_of
from kmdb.pipeline.import_pass import import_parts
from kmdb.pipeline.scan_pass import scan_revisions
from kmdb.pipeline.steps import Remembered
from kmdb.retry import OUTAGE, retrying

log = logging.getLogger(__name__)
_engines: dict[str, Engine] = {}
_remembered: dict[str, Remembered] = {}
T = TypeVar("T")


def _engine() -> tuple[Engine, settings_module.Settings]:
    # Kept for the worker's next jobs: its connections and compiled statements stay warm.
    settings = settings_module.from_env()
    if settings.database_url not in _engines:
        _engines[settings.database_url] = make_engine(settings)
    return _engines[settings.database_url], settings


# How often a job waiting for the database tries to take its lock again.
LOCK_RETRY = 1.0


def _retrying(action: Callable[[], T]) -> T:
    """Run action again after a lost database or S3 connection, with backoff.

    Imports resume from their last commit, so a new attempt loses nothing; any
    other failure (bad configuration, a missing file) fails the job at once. A
    database that is down from the job's start is waited for the same way, for
    up to KMDB_OUTAGE_WAIT seconds of waiting in all.
    """
    return retrying(
        action,
        is_transient,
        OUTAGE,
        budget=lambda: settings_module.from_env().outage_wait,
        say="Lost the database or S3 ({error}); trying again in {pause:.0f} s "
        "(for up to {budget:.0f} s in all).",
        wait=_wait_alive,
    )


def _wait_alive(seconds: float) -> None:
    """Sleep between attempts holding the job's first lock, where the database allows.

    The attempt that failed let go of its locks, and other workers call a started
    job whose first lock stays free dead (kmdb.orchestrate.liveness.is_dead): they
    would plan its work again while it waits. The database may be what failed:
    the lock is taken as soon as it answers again.
    """
    job = get_current_job()
    what = lock_of(job) if job is not None else None
    locks: LockSet | None = None
    deadline = time.monotonic() + seconds
    try:
        while True:
            if what is not None and locks is None:
                locks = _try_lock(what)
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(LOCK_RETRY, left))
    finally:
        if locks is not None:
            with contextlib.suppress(Exception):
                locks.close()


def _try_lock(what: str) -> LockSet | None:
    """The lock `what` on a connection of its own, or None (no database, or another holds it)."""
    locks = None
    try:
        engine, _settings = _engine()
        locks = LockSet(engine)
        locks.take(what, wait=0)
        return locks
    except Exception as exc:
        log.debug("Waiting without the lock %s: %s", what, exc)
        if locks is not None:
            with contextlib.suppress(Exception):
                locks.close()
        return None


@contextlib.contextmanager
def _holding_job_lock() -> Iterator[None]:
    """Hold the running job's lock while a test pauses it (kmdb.faults): a job that is
    running looks alive, and a paused one must too."""
    job = get_current_job()
    what = lock_of(job) if job is not None else None
    if what is None:
        yield
        return
    engine = make_engine(settings_module.from_env())
    locks = LockSet(engine)
    try:
        with contextlib.suppress(LockBusy):  # held already: the job looks alive either way
            locks.take(what, wait=0)
        yield
    finally:
        locks.close()
        engine.dispose()


def _import_result(counts: Counts) -> dict[str, object]:
    return {
        "lines": counts.lines,
        "events": counts.events,
        "properties": counts.properties,
        "rejected": counts.rejected,
        "bytes": counts.bytes,
        "timings": counts.timings,
    }


def import_parts_job(source: str, parts: list[list[int]]) -> dict[str, object]:
    """Import parts of revision files of the export at source, [revision, part] each."""
    units = [(revision, part) for revision, part in parts]

    def run() -> Counts:
        engine, settings = _engine()
        # The ids interned by the worker's earlier jobs, where they still hold.
        remembered = _remembered.get(settings.database_url)
        if remembered is None:
            remembered = _remembered[settings.database_url] = Remembered(engine)
        return import_parts(
            engine, open_source(source, settings), units, settings, remembered=remembered
        )

    pause("import", _holding_job_lock)
    counts = _retrying(run)
    log.info(
        "%s parts of revisions %s-%s: %s lines, %s events",
        len(units),
        units[0][0],
        units[-1][0],
        counts.lines,
        counts.events,
    )
    return _import_result(counts)


def scan_revisions_job(source: str, revisions: list[int]) -> int:
    """First pass: record the alias lines of revision files."""

    def run() -> int:
        engine, settings = _engine()
        return scan_revisions(engine, open_source(source, settings), revisions, settings)

    pause("scan", _holding_job_lock)
    return _retrying(run)


def settle_job(before_import: bool = False) -> dict[str, int]:
    """Fold new aliases into people and re-point rows (before the import, and once it is in)."""

    def run() -> Settled:
        engine, settings = _engine()
        return settle(engine, tmp_dir=settings.tmp_dir, before_import=before_import)

    pause("settle-before" if before_import else "settle-after", _holding_job_lock)
    result: Settled = _retrying(run)
    return {
        "new_aliases": result.new_aliases,
        "events_moved": result.events_moved,
        "indexes_built": result.indexes_built,
    }


def repoint_job() -> dict[str, int]:
    """Re-point older rows of the people that the settle before the import changed.

    It runs beside the import jobs (kmdb.load.repoint), which need none of it.
    """

    def run() -> tuple[int, int]:
        engine, _settings = _engine()
        return repoint_pending(engine)

    pause("repoint", _holding_job_lock)
    events, properties = _retrying(run)
    return {"events_moved": events, "properties_moved": properties}


def join_job() -> None:
    """Nothing: a join between two stages of many jobs (kmdb.orchestrate.graph._Graph)."""
