"""Importing one revision file: source -> parse -> filters -> identities -> bulk load.

A revision goes through two passes. The scan reads the whole file: it records
its alias lines in `alias_sightings`, so that the settle step between the
passes knows every person before a single event is written, and it finds where
each part of the file starts (parts of about KMDB_PART_SIZE bytes, which
several workers import side by side). The import of a part then writes events
and properties against canonical identities, in chunks of KMDB_BATCH_SIZE
lines: each chunk's rows and the part's progress commit in one transaction, so
an interrupted import resumes exactly where its last commit left it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gc
import logging
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from sqlalchemy import Connection, Engine, func, select, update

from kmdb.errors import KmdbError, SourceError
from kmdb.extract.framing import (
    LineStarts,
    ReadAhead,
    Source,
    batch_sizes,
    line_batches,
    matching_lines,
)
from kmdb.load import schema
from kmdb.load.bulk import (
    TABLES,
    Interner,
    Staged,
    escape,
    is_transient,
    load_staged,
    retrying,
    stage_rows,
)
from kmdb.load.engine import insert_ignore, is_mysql
from kmdb.load.locks import LockSet
from kmdb.load.parts import (
    now,
    part_key,
    plan_parts,
    planned_parts,
    set_part,
    sum_parts,
    update_many,
)
from kmdb.load.settle import merge_sightings
from kmdb.settings import Settings
from kmdb.transform import filters as filters_module
from kmdb.transform.identity import alias_pair
from kmdb.transform.parse import Record, Rejection, parse_fields

log = logging.getLogger(__name__)

# Row ids are revision * ID_BASE + the line number (events), or + the offset where
# the line's part starts + the property's position in that part (properties: a
# part of n bytes holds fewer than n properties, so parts never share ids).
ID_BASE = 10**12
# The largest revision whose ids still fit a signed 64-bit BIGINT.
MAX_REVISION = (2**63 - 1) // ID_BASE - 1
# Rejected lines keep this many characters of their text.
REJECTED_TEXT_CHARS = 65_536
# A job forgets the users it has looked up beyond this many (some 200 bytes each).
USER_CACHE = 200_000
# Each revision logs this many rejected lines one by one, then only their count.
REJECTIONS_LOGGED = 5


# Set when a worker is asked to shut down (SIGINT, SIGTERM): stop after the chunk in flight commits.
STOP = threading.Event()


class Stopped(KmdbError):
    """The import was asked to stop; what it committed stays, the next run goes on from there."""


@contextlib.contextmanager
def stopping_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into a request to stop after the chunk in flight commits.

    A second signal interrupts at once (KeyboardInterrupt). Only in the main thread,
    where Python lets handlers be set; the old handlers come back on leaving.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ask(_signum: int, _frame: object) -> None:
        if STOP.is_set():
            raise KeyboardInterrupt
        STOP.set()

    old = {sig: signal.signal(sig, ask) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _check_stop(revision: int, line: int) -> None:
    if STOP.is_set():
        raise Stopped(f"Stopped on request after line {line} of revision {revision}.")


class ConcurrentImport(KmdbError):
    """Another worker moved this revision on while we were working on the same chunk."""


@dataclass
class Counts:
    """What an import added."""

    lines: int = 0
    events: int = 0
    properties: int = 0
    aliases: int = 0
    rejected: int = 0
    bytes: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def add(self, other: Counts) -> None:
        """Add other's counts and timings to these."""
        for name in ("lines", "events", "properties", "aliases", "rejected", "bytes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for stage, seconds in other.timings.items():
            self.timings[stage] = self.timings.get(stage, 0.0) + seconds


# Every row needs its time as text; a day's date and a second's clock are each
# formatted once (strftime per row was a tenth of the import's Python time).
_CLOCK: list[str] = []


@functools.lru_cache(maxsize=4096)
def _day(days: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=days)).isoformat()


def prepare_clock() -> None:
    """Format the 86,400 clock times (once per process; a worker does it before forking)."""
    if not _CLOCK:
        # An hour's "MM:SS" once, then joined to each hour: a third of the time of
        # formatting every second (a worker's start waits on it).
        minutes = [f"{m:02d}:{s:02d}" for m in range(60) for s in range(60)]
        _CLOCK.extend([f"{h:02d}:" + ms for h in range(24) for ms in minutes])


def timestamp(t: int) -> str:
    """A UTC DATETIME literal for seconds since the epoch."""
    days, seconds = divmod(t, 86_400)
    if not _CLOCK:
        prepare_clock()
    return f"{_day(days)} {_CLOCK[seconds]}"


def revision_states(
    engine: Engine, revisions: list[int], sizes: dict[int, int | None] | None = None
) -> dict[int, dict]:
    """The revisions' progress rows, created where missing (with their file sizes, if known:
    scans read small files ahead, and keep them for their import, only when sizes are known)."""
    for revision in revisions:
        if not 0 <= revision <= MAX_REVISION:
            raise KmdbError(
                f"Revision {revision} is beyond the largest number kmdb can give row ids for "
                f"({MAX_REVISION}); it was not imported."
            )
    r = schema.revisions
    with engine.begin() as conn:
        conn.execute(
            insert_ignore(r),
            [{"number": n, "status": "pending", "size": (sizes or {}).get(n)} for n in revisions],
        )
        rows = conn.execute(select(r).where(r.c.number.in_(revisions))).all()
    return {row.number: dict(row._mapping) for row in rows}


def revision_state(engine: Engine, revision: int) -> dict:
    """The revision's progress row, created if missing."""
    return revision_states(engine, [revision])[revision]


def _set_status(engine: Engine, revision: int, **values: object) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(schema.revisions).where(schema.revisions.c.number == revision).values(**values)
        )


# A line can only be an alias if it spells out the key _p2, or writes one of its
# characters as a \u escape (_ is \u005f, p \u0070, 2 \u0032).
_MAY_BE_ALIAS = (re.compile(rb"_p2"), re.compile(rb"\\u00(?:5[fF]|70|32)"))


def _tsv_rows(
    records: list[tuple[int, tuple]],
    base: int,
    start: int,
    seq: int,
    key_ids: dict,
    user_ids: dict,
) -> tuple[list[str], list[str], int]:
    """Events and properties as LOAD DATA lines (the hot loop of a MySQL import)."""
    events: list[str] = []
    properties: list[str] = []
    for line_no, (kind, t, p, n, _p2, props) in records:
        ts = timestamp(t)
        identity_id, canonical_id = user_ids[p]
        user_id = canonical_id or identity_id
        if kind == "event":
            event_id = base + line_no
            events.append(f"{event_id}\t{ts}\t{key_ids[n]}\t{user_id}\t{identity_id}\n")
            tail = f"\t{user_id}\t{event_id}\t{identity_id}\n"
        else:
            tail = f"\t{user_id}\t\\N\t{identity_id}\n"
        for name, value in props:
            seq += 1
            # Most values need no escaping; isprintable is false for tab, newline and NUL.
            if "\\" in value or not value.isprintable():
                value = escape(value)
            properties.append(f"{base + start + seq}\t{ts}\t{key_ids[name]}\t{value}{tail}")
    return events, properties, seq


def _tuple_rows(
    records: list[tuple[int, tuple]],
    base: int,
    start: int,
    seq: int,
    key_ids: dict,
    user_ids: dict,
) -> tuple[list[tuple], list[tuple], int]:
    """Events and properties as row tuples (for executemany on SQLite)."""
    events: list[tuple] = []
    properties: list[tuple] = []
    for line_no, (kind, t, p, n, _p2, props) in records:
        ts = timestamp(t)
        identity_id, canonical_id = user_ids[p]
        user_id = canonical_id or identity_id
        event_id = None
        if kind == "event":
            event_id = base + line_no
            events.append((event_id, ts, key_ids[n], user_id, identity_id))
        for name, value in props:
            seq += 1
            properties.append(
                (base + start + seq, ts, key_ids[name], value, user_id, event_id, identity_id)
            )
    return events, properties, seq


@dataclass
class Part:
    """One part of a revision file on its way in: where it starts and ends, and how far it got."""

    revision: int
    part: int
    start_byte: int
    end_byte: int | None
    lines_done: int
    bytes_done: int
    properties_done: int

    @classmethod
    def of(cls, row: dict) -> Part:
        """The part of a revision_parts row."""
        return cls(
            row["revision"],
            row["part"],
            row["start_byte"] or 0,
            row["end_byte"],
            row["lines_done"],
            row["bytes_done"],
            row["properties_done"],
        )


@dataclass
class Segment:
    """Consecutive lines of one part, within a chunk; no lines: the part ends here."""

    part: Part
    first: int  # number of the first line
    raws: list[bytes]
    end_offset: int  # byte offset after the last line


@dataclass
class Move:
    """How far a chunk takes one part: its progress row is updated to this in the chunk's transaction."""

    part: Part
    from_line: int
    to_line: int
    end_offset: int
    properties_done: int
    counts: Counts
    finished: bool


@dataclass
class Prepared:
    """A chunk parsed and staged, waiting for its transaction."""

    counts: Counts
    staged: list[Staged]
    moves: list[Move]


class Importer:
    """What the parts of one job share: filters, interned names, timings, and the chunk steps."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        with engine.connect() as conn:
            self.filters = filters_module.load(conn)
        self.keys = Interner(engine, schema.keys, "string")
        self.users = Interner(engine, schema.users, "name", extra="canonical_id")
        self.counts = Counts()
        self.rejected: dict[int, int] = {}  # per revision, for the log

    def _clock(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.counts.timings[stage] = self.counts.timings.get(stage, 0.0) + now - since
        return now

    def _reject(self, rejected: list[tuple], revision: int, line_no: int, why: Rejection) -> None:
        seen = self.rejected.get(revision, 0)
        if seen < REJECTIONS_LOGGED:
            log.warning("Revision %s, line %s rejected: %s", revision, line_no, why.reason)
        self.rejected[revision] = seen + 1
        rejected.append((revision, line_no, why.reason, why.text[:REJECTED_TEXT_CHARS]))

    def sightings(self, revision: int, numbered: list[tuple[int, bytes]]) -> list[tuple]:
        """First pass: the alias lines among numbered lines, as alias_sightings rows."""
        sightings = []
        for line_no, raw in numbered:
            parsed = parse_fields(raw)
            if type(parsed) is not tuple or parsed[0] != "alias":
                continue
            kept = self.filters.keep(Record(*parsed)) if self.filters.active else parsed
            pair = alias_pair(kept[2], kept[4]) if kept is not None else None
            if pair is not None:
                sightings.append((revision, line_no, pair[0], pair[1], timestamp(kept[1])))
        return sightings

    def write_sightings(self, sightings: list[tuple], then: Callable[[Connection], None]) -> None:
        """Record sightings (idempotent) and run then, in one transaction."""
        # Their names are interned when they are merged into aliases, in one statement.
        table, columns = TABLES["alias_sightings"]
        staged = stage_rows(self.engine, table, columns, sightings, self.settings.tmp_dir)

        def write() -> None:
            with self.engine.begin() as conn:
                # A scan run again after a crash meets its own earlier lines: keep those.
                load_staged(conn, staged, ignore_duplicates=True)
                then(conn)

        try:
            retrying(write)
        finally:
            staged.discard()

    def _parse(self, segment: Segment, rejected: list[tuple]) -> list[tuple[int, tuple]]:
        records: list[tuple[int, tuple]] = []
        filters = self.filters if self.filters.active else None
        revision = segment.part.revision
        for line_no, raw in enumerate(segment.raws, segment.first):
            parsed = parse_fields(raw)
            if type(parsed) is tuple:
                if parsed[0] == "alias":  # recorded by the scan
                    continue
                if filters is not None and (parsed := filters.keep(Record(*parsed))) is None:
                    continue
                records.append((line_no, parsed))
            elif parsed is not None:
                self._reject(rejected, revision, line_no, parsed)
        return records

    def prepare(self, segments: list[Segment]) -> Prepared:
        """Second pass, in this thread: parse a chunk, intern its names, stage its rows."""
        started = time.perf_counter()
        parsed = []
        rejected: list[tuple] = []
        for segment in segments:
            before = len(rejected)
            parsed.append((segment, self._parse(segment, rejected), len(rejected) - before))
        now = self._clock("parse", started)

        if len(self.users.cache) > USER_CACHE:
            self.users.cache.clear()  # memory stays bounded on a revision of many people
        known = self.users.cache
        # rec[2] is the identity (_p) of a record.
        wanted = {rec[2] for _, records, _ in parsed for _, rec in records if rec[2] not in known}
        user_ids = self.users.ids(wanted)
        now = self._clock("identities", now)

        events: list = []
        properties: list = []
        moves: list[Move] = []
        for segment, records, rejections in parsed:
            part = segment.part
            seg_events, seg_properties, seq = self._rows(part, records, user_ids)
            events += seg_events
            properties += seg_properties
            # A part's end marker holds no lines: it leaves the part where it is.
            last = segment.first + len(segment.raws) - 1 if segment.raws else part.lines_done
            end = segment.end_offset if segment.raws else part.bytes_done
            counts = Counts(
                lines=len(segment.raws),
                events=len(seg_events),
                properties=len(seg_properties),
                rejected=rejections,
                bytes=end - part.bytes_done,
            )
            finished = not segment.raws
            moves.append(Move(part, part.lines_done, last, end, seq, counts, finished))
            part.lines_done, part.bytes_done, part.properties_done = last, end, seq
        total = Counts()
        for move in moves:
            total.add(move.counts)
        tmp = self.settings.tmp_dir
        staged = [
            stage_rows(self.engine, *TABLES["events"], events, tmp),
            stage_rows(self.engine, *TABLES["properties"], properties, tmp),
            stage_rows(self.engine, *TABLES["rejected_lines"], rejected, tmp),
        ]
        self._clock("rows", now)
        return Prepared(total, staged, moves)

    def _rows(
        self, part: Part, records: list[tuple[int, tuple]], user_ids: dict
    ) -> tuple[list, list, int]:
        rows = _tsv_rows if is_mysql(self.engine) else _tuple_rows
        base = part.revision * ID_BASE
        args = (records, base, part.start_byte, part.properties_done)
        try:
            # Names of events and properties are few and soon all known: look for new
            # ones only when a row needs one.
            return rows(*args, self.keys.cache, user_ids)
        except KeyError:
            started = time.perf_counter()
            self.keys.ids(_key_names(records, self.keys.cache))
            self._clock("identities", started)
            return rows(*args, self.keys.cache, user_ids)

    def commit(self, prepared: Prepared) -> Counts:
        """Load a prepared chunk and its parts' progress in one transaction (in the loader thread)."""
        started = time.perf_counter()
        try:
            retrying(lambda: self._commit(prepared))
        finally:
            for staged in prepared.staged:
                staged.discard()
        self.counts.timings["load"] = self.counts.timings.get("load", 0.0) + (
            time.perf_counter() - started
        )
        self.counts.add(prepared.counts)
        return prepared.counts

    def _commit(self, p: Prepared) -> None:
        r = schema.revision_parts
        moves = _per_part(p.moves)
        with self.engine.begin() as conn:
            # The progress rows are updated first: they lock the parts, so a second
            # worker on the same part waits here and then finds it moved on. One
            # statement for all of them: the loader thread waits for the GIL after
            # each statement, and a chunk of small files moves dozens of parts.
            moved = conn.exec_driver_sql(_progress_sql(moves))
            if moved.rowcount != len(moves):
                now_at = [
                    conn.execute(
                        select(r.c.lines_done).where(
                            r.c.revision == m.part.revision, r.c.part == m.part.part
                        )
                    ).scalar()
                    for m in moves
                ]
                if moved.rowcount == 0 and now_at[0] == moves[0].to_line:
                    # A retry after a lost connection: the first attempt did commit.
                    return
                # This transaction moved the others: it is rolled back.
                moved_on = next(
                    (m for m, at in zip(moves, now_at, strict=True) if at != m.to_line), moves[0]
                )
                part = moved_on.part
                raise ConcurrentImport(
                    f"Revision {part.revision} (part {part.part}) was moved past line "
                    f"{moved_on.from_line} by another worker; this worker stops working on it."
                )
            for staged in p.staged:
                load_staged(conn, staged)


def _per_part(moves: list[Move]) -> list[Move]:
    """A chunk's moves, one per part: a part's lines and its end marker may both be in a chunk."""
    merged: dict[tuple[int, int], Move] = {}
    for move in moves:
        unit = (move.part.revision, move.part.part)
        first = merged.get(unit)
        if first is None:
            merged[unit] = replace(move, counts=Counts())
            merged[unit].counts.add(move.counts)
            continue
        first.to_line, first.end_offset = move.to_line, move.end_offset
        first.properties_done = move.properties_done
        first.finished = first.finished or move.finished
        first.counts.add(move.counts)
    return list(merged.values())


def _progress_sql(moves: list[Move]) -> str:
    """One UPDATE of revision_parts that moves every part of a chunk, each only from where
    the chunk found it (so that its row count tells whether another worker moved one)."""
    values: dict[str, list[object]] = {
        "lines_done": [m.to_line for m in moves],
        "bytes_done": [m.end_offset for m in moves],
        "properties_done": [m.properties_done for m in moves],
    }
    for column in ("events", "properties", "rejected"):
        added = [getattr(m.counts, column) for m in moves]
        if any(added):
            values[column] = [f"{column} + {int(n)}" for n in added]
    if any(m.finished for m in moves):
        values["status"] = ["'done'" if m.finished else "status" for m in moves]
    return update_many(
        "revision_parts",
        [part_key(m.part.revision, m.part.part) for m in moves],
        values,
        [f"lines_done = {int(m.from_line)}" for m in moves],
    )


def _key_names(records: list[tuple[int, tuple]], known: dict) -> set[str]:
    names: set[str] = set()
    for _, (_kind, _t, _p, n, _p2, props) in records:
        if n is not None and n not in known:
            names.add(n)
        names.update(name for name, _ in props if name not in known)
    return names


# A scan merges the sightings waiting only when there are this many: a merge has a
# fixed cost of some 50 ms in round trips, which small revisions paid once each.
SCAN_MERGE_MIN = 5_000


def _can_go_on(exc: BaseException) -> bool:
    """Whether a failure concerns one revision file alone (it cannot be read), so that the
    other files of the job go on; other failures stop the job (a lost connection is retried)."""
    return isinstance(exc, SourceError) and not is_transient(exc)


class Unreadable(KmdbError):
    """Some files of a job could not be read; the others were imported."""


def _failed(what: list[str], count: int, noun: str) -> Unreadable:
    return Unreadable(f"{len(what)} of {count} {noun} could not be read: {'; '.join(what)}")


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
        # workers that this job is alive (schedule.is_dead).
        locks.take_all([f"revision:{n}" for n in dict.fromkeys([*revisions[:1], *todo])])
        if todo:  # another worker may have scanned some while we waited
            states = revision_states(engine, todo)
            todo = [n for n in todo if not states[n]["scanned"]]
        if not todo:
            return 0
        importer = Importer(engine, settings)
        # Small files' sightings and marks wait to be written together, a batch at a time.
        waiting: list[tuple] = []
        marks: list[_Scanned] = []

        def flush() -> None:
            if marks:
                importer.write_sightings(waiting, lambda conn: _mark_scanned(conn, marks))
            waiting.clear()
            marks.clear()

        planned = planned_parts(engine, todo)
        spans = [((n, 0, None), states[n]["size"]) for n in todo]
        with ReadAhead(source, spans, keep=True) as reader:
            for revision in todo:
                try:
                    parts = planned.get(revision) or plan_parts(engine, source, revision, settings)
                    sightings, mark = _scan(reader, revision, parts, settings, importer)
                except Exception as exc:
                    if isinstance(exc, Stopped):  # on request: nothing failed, a re-run goes on
                        _set_status(engine, revision, status="stopped", error=None)
                    else:
                        _set_status(engine, revision, status="failed", error=_error_text(exc))
                    if len(revisions) == 1 or not _can_go_on(exc):
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
            # its first lock (schedule.is_dead), and a big file's merge takes seconds.
            merge_sightings(engine, settings.tmp_dir, at_least=SCAN_MERGE_MIN)
    if failures:
        raise _failed(failures, len(revisions), "revisions")
    return found


def scan_revision(engine: Engine, source: Source, revision: int, settings: Settings) -> int:
    """First pass over one revision (see scan_revisions)."""
    return scan_revisions(engine, source, [revision], settings)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


@dataclass
class _Scanned:
    """What marks a revision scanned: where its parts start and end, and its alias count."""

    revision: int
    parts: list[dict]
    starts: LineStarts
    found: int

    def parts_found(self) -> list[tuple[int, int, int, int]]:
        """(part, start byte, start line, end byte) of each of the revision's parts."""
        starts = self.starts
        ends = [starts.starts[part["first_byte"]][0] for part in self.parts[1:]] + [starts.size]
        found = []
        for part, end in zip(self.parts, ends, strict=True):
            start_byte, start_line = starts.starts[part["first_byte"]]
            found.append((part["part"], start_byte, start_line, max(end, start_byte)))
        return found


# Revisions marked scanned per statement (a CASE each, whose WHENs every row looks through).
MARKS_PER_STATEMENT = 100


def _mark_scanned(conn: Connection, marks: list[_Scanned]) -> None:
    """Record where the parts of scanned revisions start and end, and mark them scanned."""
    for start in range(0, len(marks), MARKS_PER_STATEMENT):
        batch = marks[start : start + MARKS_PER_STATEMENT]
        found = [(m.revision, *part) for m in batch for part in m.parts_found()]
        revisions, parts, start_bytes, start_lines, ends = zip(*found, strict=True)
        conn.exec_driver_sql(
            update_many(
                "revision_parts",
                [part_key(r, p) for r, p in zip(revisions, parts, strict=True)],
                {
                    "start_byte": start_bytes,
                    "start_line": start_lines,
                    "end_byte": ends,
                    "bytes_done": start_bytes,
                    "lines_done": [line - 1 for line in start_lines],
                },
            )
        )
        conn.exec_driver_sql(
            update_many(
                "revisions",
                [f"number = {int(m.revision)}" for m in batch],
                {
                    "scanned": [1] * len(batch),
                    "aliases": [int(m.found) for m in batch],
                    "size": [int(m.starts.size) for m in batch],
                },
            )
        )


def _scan(
    reader: ReadAhead, revision: int, parts: list[dict], settings: Settings, importer: Importer
) -> tuple[list[tuple], _Scanned]:
    """Read a revision for its alias lines; return those not written yet, and its mark.

    A big file's sightings are written as they come, a batch at a time, so that
    memory stays bounded; the rest wait for the caller, with the mark.
    """
    starts = LineStarts([part["first_byte"] for part in parts])
    found = 0
    batch: list[tuple[int, bytes]] = []
    sightings: list[tuple] = []
    for numbered in matching_lines(starts.wrap(reader.chunks(revision)), *_MAY_BE_ALIAS):
        batch.append(numbered)
        if len(batch) >= settings.batch_size:
            sightings += importer.sightings(revision, batch)
            _check_stop(revision, batch[-1][0])
            batch = []
            if len(sightings) >= settings.batch_size:
                importer.write_sightings(sightings, lambda conn: None)
                found += len(sightings)
                sightings = []
    sightings += importer.sightings(revision, batch)
    return sightings, _Scanned(revision, parts, starts, found + len(sightings))


class _Stream:
    """The parts of a job as one stream of chunks of lines, a chunk spanning parts if they are small.

    The parts are started together (their locks taken, marked running); each ends
    with a segment of no lines that marks it done in its chunk's transaction.
    """

    def __init__(
        self,
        importer: Importer,
        source: Source,
        parts: list[tuple[int, int]],
        locks: LockSet,
        states: dict[int, dict],
    ) -> None:
        self.importer = importer
        self.engine = importer.engine
        self.source = source
        self.parts = parts
        self.locks = locks
        self.states = states
        self.running: dict[tuple[int, int], Part] = {}  # started, not yet committed done
        self.failures: list[str] = []
        self.already_done: set[int] = set()  # revisions of parts found done
        self.reached: set[tuple[int, int]] = set()  # parts the stream has begun to read

    def _start(self) -> list[Part]:
        """Take the parts' locks, and mark those not done yet running, in one transaction."""
        self.locks.take_all(
            [
                f"revision:{revision}:part:{number}"
                for revision, number in self.parts
                if self.states[revision]["status"] != "done"
            ]
        )
        p, r = schema.revision_parts, schema.revisions
        wanted = set(self.parts)
        query = select(p).where(p.c.revision.in_(sorted({n for n, _ in wanted})))
        with self.engine.connect() as conn:
            rows = {(row.revision, row.part): dict(row._mapping) for row in conn.execute(query)}
        missing = sorted(wanted - set(rows))
        if missing:
            raise KmdbError(
                f"Revision {missing[0][0]} has no part {missing[0][1]}; "
                "run kmdb-import to plan it again."
            )
        parts = []
        for unit in self.parts:
            if self.states[unit[0]]["status"] == "done":
                continue
            if rows[unit]["status"] == "done":
                self.already_done.add(unit[0])  # the revision is done if this was its last part
                continue
            parts.append(Part.of(rows[unit]))
        if not parts:
            return parts
        started = now()
        with self.engine.begin() as conn:
            conn.exec_driver_sql(
                update_many(
                    "revision_parts",
                    [part_key(part.revision, part.part) for part in parts],
                    {"status": ["'running'"] * len(parts), "error": ["NULL"] * len(parts)},
                )
            )
            conn.execute(
                update(r)
                .where(r.c.number.in_(sorted({part.revision for part in parts})))
                .values(
                    status="running", error=None, started_at=func.coalesce(r.c.started_at, started)
                )
            )
        for part in parts:
            self.running[(part.revision, part.part)] = part
        return parts

    def chunks(self, size: int) -> Iterator[list[Segment]]:
        """Chunks of about `size` lines (smaller at the start and near the end)."""
        parts = self._start()
        left = [
            ((p.revision, p.bytes_done, p.end_byte), _rest(p.bytes_done, p.end_byte)) for p in parts
        ]
        known = [rest for _, rest in left if rest is not None]
        sizes = batch_sizes(size, sum(known) if len(known) == len(left) else None)
        with ReadAhead(self.source, left) as self.reader:
            chunk: list[Segment] = []
            lines = read = read_lines = 0
            target = sizes(0, 0)

            def room(_bytes: int, _lines: int) -> int:
                return max(1, target - lines)

            for part in parts:
                revision, number = part.revision, part.part
                offset = end = part.bytes_done
                self.reached.add((revision, number))
                try:
                    pieces = self.reader.chunks(revision, part.bytes_done, part.end_byte)
                    for first, raws, end in line_batches(
                        pieces, room, part.bytes_done, part.lines_done
                    ):
                        chunk.append(Segment(part, first, raws, end))
                        lines += len(raws)
                        if lines >= target:
                            read += end - offset
                            read_lines += lines
                            offset = end
                            yield chunk
                            chunk, lines = [], 0
                            target = sizes(read, read_lines)
                except Exception as exc:
                    if not _can_go_on(exc) or len(self.parts) == 1:
                        if chunk:  # what was read before goes in first
                            yield chunk
                        raise
                    self.fail(part, exc)
                    self.failures.append(f"revision {revision} (part {number}): {exc}")
                    continue
                read += end - offset
                chunk.append(Segment(part, 0, [], 0))  # the part's end
            if chunk:
                yield chunk

    def stop(self, exc: BaseException, status: str) -> None:
        """Mark the parts still running failed (or stopped); those never reached pending again."""
        reached = {r for r, _ in self.reached}
        for unit, part in list(self.running.items()):
            if unit in self.reached:
                self.fail(part, exc, status)
            else:
                self.running.pop(unit)
                set_part(self.engine, part.revision, part.part, status="pending", error=None)
                if part.revision not in reached:
                    _set_status(self.engine, part.revision, status="pending", error=None)

    def fail(self, part: Part, exc: BaseException, status: str = "failed") -> None:
        """Mark a part that stops here failed (or stopped); what it committed stays."""
        self.running.pop((part.revision, part.part), None)
        error = None if status == "stopped" else _error_text(exc)
        set_part(self.engine, part.revision, part.part, status=status, error=error)
        _set_status(self.engine, part.revision, status=status, error=error)
        sum_parts(self.engine, part.revision)


def _rest(done: int, end: int | None) -> int | None:
    return None if end is None else max(0, end - done)


# While chunks go through, the cycle collector runs only every this many chunks.
COLLECT_EVERY = 16


@contextlib.contextmanager
def _collecting_every_few_chunks() -> Iterator[Callable[[int], None]]:
    """Turn the automatic cycle collector off; the caller collects every COLLECT_EVERY chunks.

    A chunk's parsed lines are some 100,000 small objects that live until it is
    loaded. The collector walked each of them once or twice while they were
    parsed, and found nothing: rows are freed by their reference counts. Parsing
    takes an eighth less CPU time without it. Cycles are rare (some 500 objects
    per 30,000 lines, from connections and threads), so collecting them by hand
    now and then keeps memory bounded on a file of any size.
    """
    was_on = gc.isenabled()
    gc.disable()

    def after(chunk: int) -> None:
        if chunk % COLLECT_EVERY == COLLECT_EVERY - 1:
            gc.collect(1)

    try:
        yield after
    finally:
        if was_on:
            gc.enable()


def _pipeline(
    stream: _Stream, settings: Settings, on_chunk: Callable[[Counts], None] | None
) -> None:
    """Parse chunk k+1 while chunk k loads: the database works while Python parses.

    One loader thread keeps the commits in order; the GIL is free while it waits
    on the server, so the two overlap. Parts finished by a chunk are summed up
    into their revisions after its commit.
    """
    importer = stream.importer

    def load(prepared: Prepared) -> Counts:
        counts = importer.commit(prepared)
        finished = [m.part for m in prepared.moves if m.finished]
        for part in finished:
            stream.running.pop((part.revision, part.part), None)
        sum_parts(importer.engine, *{part.revision for part in finished})
        return counts

    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="kmdb-load") as loader,
        _collecting_every_few_chunks() as collect,
    ):
        loading: Future[Counts] | None = None

        def finish() -> None:
            counts = loading.result() if loading is not None else None
            if counts is not None and on_chunk:
                on_chunk(counts)

        waited = time.perf_counter()
        for chunk, segments in enumerate(stream.chunks(settings.batch_size)):
            importer._clock("download", waited)
            collect(chunk)
            prepared = importer.prepare(segments)
            try:
                finish()
                _check_stop(segments[-1].part.revision, segments[-1].part.lines_done)
            except BaseException:
                for staged in prepared.staged:
                    staged.discard()
                raise
            loading = loader.submit(load, prepared)
            waited = time.perf_counter()
        finish()


def import_parts(
    engine: Engine,
    source: Source,
    parts: list[tuple[int, int]],
    settings: Settings,
    on_chunk: Callable[[Counts], None] | None = None,
) -> Counts:
    """Import what is left of some parts of revision files, (revision, part) each, in order.

    Small files share chunks, and so transactions and the loader's time, as if
    they were one file. Revisions not scanned yet are scanned first, so that no
    alias is lost (for their events to point at canonical people at once, settle
    after the scan). A file that cannot be read is marked failed and the others
    go on; the call then fails naming it. Finished parts add nothing.
    """
    revisions = sorted({revision for revision, _ in parts})
    states = revision_states(engine, revisions)
    unscanned = [n for n in revisions if states[n]["status"] != "done" and not states[n]["scanned"]]
    failures: list[str] = []
    planned = len(parts)
    importer = Importer(engine, settings)
    with LockSet(engine) as locks:
        # Held from here to the end (the stream takes it again): other workers tell a
        # live job from a dead one by its first lock (schedule.is_dead), and scanning
        # a big revision first takes long.
        if parts:
            locks.take(f"revision:{parts[0][0]}:part:{parts[0][1]}")
        for revision in unscanned:
            try:
                scan_revision(engine, source, revision, settings)
            except Exception as exc:
                if len(parts) == 1 or not _can_go_on(exc):
                    raise
                failures.append(f"revision {revision}: {exc}")
        if unscanned:
            states = revision_states(engine, revisions)
            parts = [
                (r, p) for r, p in parts if states[r]["scanned"] or states[r]["status"] == "done"
            ]
        stream = _Stream(importer, source, parts, locks, states)
        try:
            _pipeline(stream, settings, on_chunk)
        except ConcurrentImport:
            raise
        except Stopped as exc:
            stream.stop(exc, "stopped")
            raise
        except Exception as exc:
            stream.stop(exc, "failed")
            raise
        sum_parts(engine, *stream.already_done)
    for revision, rejected in sorted(importer.rejected.items()):
        if rejected > REJECTIONS_LOGGED:
            log.warning(
                "Revision %s: %s lines rejected in all; they are in the rejected_lines table.",
                revision,
                rejected,
            )
    failures += stream.failures
    if failures:
        raise _failed(failures, planned, "parts")
    return importer.counts


def import_part(
    engine: Engine,
    source: Source,
    revision: int,
    part: int,
    settings: Settings,
    on_chunk: Callable[[Counts], None] | None = None,
) -> Counts:
    """Import what is left of one part of a revision file (see import_parts)."""
    return import_parts(engine, source, [(revision, part)], settings, on_chunk)


def import_revision(
    engine: Engine,
    source: Source,
    revision: int,
    settings: Settings,
    on_chunk: Callable[[Counts], None] | None = None,
) -> Counts:
    """Import what is left of a revision file, its parts one after the other."""
    state = revision_state(engine, revision)
    if state["status"] == "done":
        return Counts()
    if not state["scanned"]:
        scan_revision(engine, source, revision, settings)
    planned = plan_parts(engine, source, revision, settings)
    return import_parts(
        engine, source, [(revision, p["part"]) for p in planned], settings, on_chunk
    )
