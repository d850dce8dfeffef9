"""The first pass over revision files: their alias lines, and where their parts start.

A scan reads a whole file, but Python sees only the lines that may be aliases
(matching_lines): it records them in `alias_sightings`, so that the settle step
between the passes knows every person before a single event is written, and it
notes where each part's first line starts (LineStarts). Its sightings are then
folded into `aliases` while other scans read their files.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Engine

from kmdb.errors import Stopped, Unreadable, concerns_one_file
from kmdb.extract.export import Source
from kmdb.extract.framing import LineStarts, matching_lines
from kmdb.extract.read_ahead import ReadAhead, Span
from kmdb.load.ledger import ScanMark, error_text, mark_scanned, revision_states, set_status
from kmdb.load.locks import LockSet, revision_lock
from kmdb.load.parts import plan_parts, planned_parts
from kmdb.load.settle import merge_sightings
from kmdb.pipeline.steps import Importer, Sighting
from kmdb.settings import Settings
from kmdb.stop import check_stop

# A scan merges the sightings waiting only when there are this many: a merge has a
# fixed cost in round trips, which a scan of a small revision would pay for little.
SCAN_MERGE_MIN = 5_000

# A line can only be an alias if it spells out the key _p2, or writes one of its
# characters as a \u escape (_ is \u005f, p \u0070, 2 \u0032).
_MAY_BE_ALIAS = (re.compile(rb"_p2"), re.compile(rb"\\u00(?:5[fF]|70|32)"))


def scan_revisions(engine: Engine, source: Source, revisions: list[int], settings: Settings) -> int:
    """First pass over revisions: record their alias lines and where their parts start.

    Their alias lines are then folded into `aliases` (while other scans read their
    files); the settle step after the scans turns aliases into people. A revision
    that cannot be read is marked failed and the others go on; the call then fails
    naming it. Each revision's lock is kept to the end (a live job holds its first).

    Returns how many alias lines it recorded.
    """
    states = revision_states(engine, revisions)
    todo = [n for n in revisions if not states[n]["scanned"]]
    failures: list[str] = []
    found = 0
    with LockSet(engine) as locks:
        # The first revision's lock even if another job scanned it: it tells other
        # workers that this job is alive (kmdb.orchestrate.liveness.is_dead).
        locks.take_all([revision_lock(n) for n in dict.fromkeys([*revisions[:1], *todo])])
        if todo:  # another worker may have scanned some while we waited
            states = revision_states(engine, todo)
            todo = [n for n in todo if not states[n]["scanned"]]
        if not todo:
            return 0
        importer = Importer(engine, settings)
        # Small files' sightings and marks wait to be written together, a batch at a time.
        waiting: list[Sighting] = []
        marks: list[ScanMark] = []

        def flush() -> None:
            if marks:
                importer.write_sightings(waiting, lambda conn: mark_scanned(conn, marks))
            waiting.clear()
            marks.clear()

        planned = planned_parts(engine, todo)
        spans: list[tuple[Span, int | None]] = [((n, 0, None), states[n]["size"]) for n in todo]
        with ReadAhead(source, spans, keep=True) as reader:
            for revision in todo:
                try:
                    parts = planned.get(revision) or plan_parts(engine, source, revision, settings)
                    sightings, mark = _scan(reader, revision, parts, settings, importer)
                except Exception as exc:
                    if isinstance(exc, Stopped):  # on request: nothing failed, a re-run goes on
                        set_status(engine, revision, status="stopped", error=None)
                    else:
                        set_status(engine, revision, status="failed", error=error_text(exc))
                    if len(revisions) == 1 or not concerns_one_file(exc):
                        flush()  # the files read before it stay scanned
                        raise
                    failures.append(f"revision {revision}: {exc}")
                    continue
                found += mark.found
                waiting += sightings
                marks.append(mark)
                if len(waiting) >= settings.batch_size:
                    flush()
            flush()
        if found:
            # Still under the locks: other workers tell a live job from a dead one by
            # its first lock (kmdb.orchestrate.liveness.is_dead), and a big file's merge
            # takes seconds.
            merge_sightings(engine, settings.tmp_dir, at_least=SCAN_MERGE_MIN)
    if failures:
        raise Unreadable.of_job(failures, len(revisions), "revisions")
    return found


def scan_revision(engine: Engine, source: Source, revision: int, settings: Settings) -> int:
    """First pass over one revision (see scan_revisions)."""
    return scan_revisions(engine, source, [revision], settings)


def _scan(
    reader: ReadAhead,
    revision: int,
    parts: list[dict[str, Any]],
    settings: Settings,
    importer: Importer,
) -> tuple[list[Sighting], ScanMark]:
    """Read a revision for its alias lines; return those not written yet, and its mark.

    A big file's sightings are written as they come, a batch at a time, so that
    memory stays bounded; the rest wait for the caller, with the mark.
    """
    starts = LineStarts([part["first_byte"] for part in parts])
    found = 0
    batch: list[tuple[int, bytes]] = []
    sightings: list[Sighting] = []
    for numbered in matching_lines(starts.wrap(reader.chunks(revision)), *_MAY_BE_ALIAS):
        batch.append(numbered)
        if len(batch) >= settings.batch_size:
            sightings += importer.sightings(revision, batch)
            check_stop(revision, batch[-1][0])
            batch = []
            if len(sightings) >= settings.batch_size:
                importer.write_sightings(sightings, lambda conn: None)
                found += len(sightings)
                sightings = []
    sightings += importer.sightings(revision, batch)
    return sightings, ScanMark(revision, parts, starts, found + len(sightings))
