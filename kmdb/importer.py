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

import datetime as dt
import functools
import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import Engine, select, update

from kmdb import filters as filters_module
from kmdb import schema
from kmdb.db import insert_ignore, is_mysql
from kmdb.errors import KmdbError
from kmdb.identity import alias_pair
from kmdb.load import TABLES, Interner, Staged, escape, load_staged, retrying, stage_rows
from kmdb.locks import held
from kmdb.parse import Record, Rejection, parse_fields
from kmdb.parts import now, part_row, plan_parts, set_part, sum_parts
from kmdb.people import merge_sightings
from kmdb.settings import Settings
from kmdb.source import LineStarts, Source, line_batches, matching_lines, ramp

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


def revision_state(engine: Engine, revision: int) -> dict:
    """The revision's progress row, created if missing."""
    if not 0 <= revision <= MAX_REVISION:
        raise KmdbError(
            f"Revision {revision} is beyond the largest number kmdb can give row ids for "
            f"({MAX_REVISION}); it was not imported."
        )
    stmt = insert_ignore(schema.revisions).values(number=revision, status="pending")
    with engine.begin() as conn:
        conn.execute(stmt)
        row = conn.execute(
            select(schema.revisions).where(schema.revisions.c.number == revision)
        ).one()
    return dict(row._mapping)


def _set_status(engine: Engine, revision: int, **values: object) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(schema.revisions).where(schema.revisions.c.number == revision).values(**values)
        )


# A line can only be an alias if it spells out the key _p2, or writes one of its
# characters as a \u escape (_ is \u005f, p \u0070, 2 \u0032).
_MAY_BE_ALIAS = (re.compile(rb"_p2"), re.compile(rb"\\u00(?:5[fF]|70|32)"))


@dataclass
class Prepared:
    """A chunk parsed and staged, waiting for its transaction."""

    counts: Counts
    staged: list[Staged]
    from_line: int
    to_line: int
    end_offset: int
    properties_done: int


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
                (base + seq, ts, key_ids[name], value, user_id, event_id, identity_id)
            )
    return events, properties, seq


class RevisionImport:
    """The state of one revision's import as it goes through its chunks."""

    def __init__(
        self, engine: Engine, settings: Settings, revision: int, part: dict | None = None
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.revision = revision
        # A part (None for the scan): its number, where it starts and how far it got.
        self.part = part["part"] if part else 0
        self.start_byte = part["start_byte"] if part else 0
        self.lines_done = part["lines_done"] if part else 0
        self.bytes_done = part["bytes_done"] if part else 0
        self.properties_done = part["properties_done"] if part else 0
        self.end_byte = part["end_byte"] if part else None
        with engine.connect() as conn:
            self.filters = filters_module.load(conn)
        self.keys = Interner(engine, schema.keys, "string")
        self.users = Interner(engine, schema.users, "name", extra="canonical_id")
        self.counts = Counts()

    def _clock(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.counts.timings[stage] = self.counts.timings.get(stage, 0.0) + now - since
        return now

    def _reject(self, rejected: list[tuple], line_no: int, rejection: Rejection) -> None:
        if self.counts.rejected + len(rejected) < REJECTIONS_LOGGED:
            log.warning(
                "Revision %s, line %s rejected: %s", self.revision, line_no, rejection.reason
            )
        rejected.append(
            (self.revision, line_no, rejection.reason, rejection.text[:REJECTED_TEXT_CHARS])
        )

    def scan(self, numbered: list[tuple[int, bytes]]) -> int:
        """First pass: record the alias lines among numbered lines as sightings (idempotent)."""
        sightings = []
        for line_no, raw in numbered:
            parsed = parse_fields(raw)
            if type(parsed) is not tuple or parsed[0] != "alias":
                continue
            kept = self.filters.keep(Record(*parsed)) if self.filters.active else parsed
            pair = alias_pair(kept[2], kept[4]) if kept is not None else None
            if pair is not None:
                sightings.append((self.revision, line_no, pair[0], pair[1], timestamp(kept[1])))
        if not sightings:
            return 0
        # Their names are interned when they are merged into aliases, in one statement.
        table, columns = TABLES["alias_sightings"]
        staged = stage_rows(self.engine, table, columns, sightings, self.settings.tmp_dir)

        def write() -> None:
            with self.engine.begin() as conn:
                # A scan run again after a crash meets its own earlier lines: keep those.
                load_staged(conn, staged, ignore_duplicates=True)

        try:
            retrying(write)
        finally:
            staged.discard()
        return len(sightings)

    def prepare(self, first: int, raws: list[bytes], end_offset: int) -> Prepared:
        """Second pass, in this thread: parse a chunk, intern its names, stage its rows."""
        started = time.perf_counter()
        rejected: list[tuple] = []
        records: list[tuple[int, tuple]] = []
        filters = self.filters if self.filters.active else None
        for line_no, raw in enumerate(raws, first):
            parsed = parse_fields(raw)
            if type(parsed) is tuple:
                if parsed[0] == "alias":  # recorded by the scan
                    continue
                if filters is not None and (parsed := filters.keep(Record(*parsed))) is None:
                    continue
                records.append((line_no, parsed))
            elif parsed is not None:
                self._reject(rejected, line_no, parsed)
        now = self._clock("parse", started)

        if len(self.users.cache) > USER_CACHE:
            self.users.cache.clear()  # memory stays bounded on a revision of many people
        known_users = self.users.cache
        # rec[2] is the identity (_p) of a record.
        user_ids = self.users.ids({rec[2] for _, rec in records if rec[2] not in known_users})
        now = self._clock("identities", now)

        rows = _tsv_rows if is_mysql(self.engine) else _tuple_rows
        base = self.revision * ID_BASE
        try:
            # Names of events and properties are few and soon all known: look for new
            # ones only when a row needs one.
            events, properties, seq = rows(
                records, base, self.start_byte, self.properties_done, self.keys.cache, user_ids
            )
        except KeyError:
            started = time.perf_counter()
            self.keys.ids(self._key_names(records))
            self._clock("identities", started)
            events, properties, seq = rows(
                records, base, self.start_byte, self.properties_done, self.keys.cache, user_ids
            )
        last = first + len(raws) - 1
        counts = Counts(
            lines=len(raws),
            events=len(events),
            properties=len(properties),
            rejected=len(rejected),
            bytes=end_offset - self.bytes_done,
        )
        tmp = self.settings.tmp_dir
        staged = [
            stage_rows(self.engine, *TABLES["events"], events, tmp),
            stage_rows(self.engine, *TABLES["properties"], properties, tmp),
            stage_rows(self.engine, *TABLES["rejected_lines"], rejected, tmp),
        ]
        prepared = Prepared(counts, staged, self.lines_done, last, end_offset, seq)
        self.lines_done, self.bytes_done, self.properties_done = last, end_offset, seq
        self._clock("rows", now)
        return prepared

    def _key_names(self, records: list[tuple[int, tuple]]) -> set[str]:
        known = self.keys.cache
        names: set[str] = set()
        for _, (_kind, _t, _p, n, _p2, props) in records:
            if n is not None and n not in known:
                names.add(n)
            names.update(name for name, _ in props if name not in known)
        return names

    def commit(self, prepared: Prepared) -> Counts:
        """Load a prepared chunk and its progress in one transaction (may run in a loader thread)."""
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
        mine = (r.c.revision == self.revision) & (r.c.part == self.part)
        with self.engine.begin() as conn:
            # The progress row is updated first: it locks the part, so a second
            # worker on the same part waits here and then finds it moved on.
            moved = conn.execute(
                update(r)
                .where(mine, r.c.lines_done == p.from_line)
                .values(
                    lines_done=p.to_line,
                    bytes_done=p.end_offset,
                    properties_done=p.properties_done,
                    events=r.c.events + p.counts.events,
                    properties=r.c.properties + p.counts.properties,
                    rejected=r.c.rejected + p.counts.rejected,
                )
            )
            if moved.rowcount != 1:
                now_at = conn.execute(select(r.c.lines_done).where(mine))
                if now_at.scalar() == p.to_line:
                    # A retry after a lost connection: the first attempt did commit.
                    return
                raise ConcurrentImport(
                    f"Revision {self.revision} (part {self.part}) was moved past line "
                    f"{p.from_line} by another worker; this worker stops working on it."
                )
            for staged in p.staged:
                load_staged(conn, staged)


# A scan merges the sightings waiting only when there are this many: a merge has a
# fixed cost of some 50 ms in round trips, which small revisions paid once each.
SCAN_MERGE_MIN = 5_000


def scan_revision(engine: Engine, source: Source, revision: int, settings: Settings) -> int:
    """First pass over a revision: record its alias lines and where its parts start.

    Its alias lines are then folded into `aliases` (while other scans read their
    files); the settle step after the scans turns aliases into people.

    Returns how many alias lines it recorded.
    """
    state = revision_state(engine, revision)
    if state["scanned"]:
        return 0
    with held(engine, f"revision:{revision}"):
        state = revision_state(engine, revision)
        if state["scanned"]:  # another worker did it while we waited
            return 0
        try:
            parts = plan_parts(engine, source, revision, settings)
            job = RevisionImport(engine, settings, revision)
            starts = LineStarts([part["first_byte"] for part in parts])
            found = 0
            batch: list[tuple[int, bytes]] = []
            chunks = starts.wrap(source.chunks(revision))
            for numbered in matching_lines(chunks, *_MAY_BE_ALIAS):
                batch.append(numbered)
                if len(batch) >= settings.batch_size:
                    found += job.scan(batch)
                    _check_stop(revision, batch[-1][0])
                    batch = []
            if batch:
                found += job.scan(batch)
        except Exception as exc:
            _set_status(
                engine, revision, status="failed", error=f"{type(exc).__name__}: {exc}"[:2000]
            )
            raise
        p = schema.revision_parts
        ends = [starts.starts[part["first_byte"]][0] for part in parts[1:]] + [starts.size]
        with engine.begin() as conn:
            for part, end in zip(parts, ends, strict=True):
                start_byte, start_line = starts.starts[part["first_byte"]]
                conn.execute(
                    update(p)
                    .where(p.c.revision == revision, p.c.part == part["part"])
                    .values(
                        start_byte=start_byte,
                        start_line=start_line,
                        end_byte=max(end, start_byte),
                        bytes_done=start_byte,
                        lines_done=start_line - 1,
                    )
                )
            conn.execute(
                update(schema.revisions)
                .where(schema.revisions.c.number == revision)
                .values(scanned=True, aliases=found, size=starts.size)
            )
    if found:
        merge_sightings(engine, settings.tmp_dir, at_least=SCAN_MERGE_MIN)
    return found


def _pipeline(
    job: RevisionImport,
    source: Source,
    settings: Settings,
    on_chunk: Callable[[Counts], None] | None,
) -> None:
    """Parse chunk k+1 while chunk k loads: the database works while Python parses.

    One loader thread keeps the commits in order; the GIL is free while it waits
    on the server, so the two overlap.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kmdb-load") as loader:
        loading: Future[Counts] | None = None

        def finish() -> None:
            counts = loading.result() if loading is not None else None
            if counts is not None and on_chunk:
                on_chunk(counts)

        waited = time.perf_counter()
        chunks = source.chunks(job.revision, job.bytes_done, job.end_byte)
        for first, raws, end in line_batches(
            chunks, ramp(settings.batch_size), job.bytes_done, job.lines_done
        ):
            job._clock("download", waited)
            prepared = job.prepare(first, raws, end)
            try:
                finish()
                _check_stop(job.revision, prepared.from_line)
            except BaseException:
                for staged in prepared.staged:
                    staged.discard()
                raise
            loading = loader.submit(job.commit, prepared)
            waited = time.perf_counter()
        finish()


def import_part(
    engine: Engine,
    source: Source,
    revision: int,
    part: int,
    settings: Settings,
    on_chunk: Callable[[Counts], None] | None = None,
) -> Counts:
    """Import what is left of one part of a revision file; a finished one adds nothing.

    A revision not scanned yet is scanned first, so that no alias is lost; for
    its events to point at canonical people at once, settle after the scan.
    """
    state = revision_state(engine, revision)
    if state["status"] == "done":
        return Counts()
    if not state["scanned"]:
        scan_revision(engine, source, revision, settings)
    with held(engine, f"revision:{revision}:part:{part}"):
        row = part_row(engine, revision, part)
        if row["status"] == "done":
            sum_parts(engine, revision)  # the revision is done if this was its last part
            return Counts()
        set_part(engine, revision, part, status="running", error=None)
        state = revision_state(engine, revision)
        if state["status"] != "running" or state["started_at"] is None:
            _set_status(
                engine,
                revision,
                status="running",
                error=None,
                started_at=state["started_at"] or now(),
            )
        job = RevisionImport(engine, settings, revision, row)
        try:
            _pipeline(job, source, settings, on_chunk)
        except ConcurrentImport:
            raise
        except Stopped:
            set_part(engine, revision, part, status="stopped")
            _set_status(engine, revision, status="stopped")
            sum_parts(engine, revision)
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:2000]
            set_part(engine, revision, part, status="failed", error=error)
            _set_status(engine, revision, status="failed", error=error)
            sum_parts(engine, revision)
            raise
        set_part(engine, revision, part, status="done")
        sum_parts(engine, revision)
    if job.counts.rejected > REJECTIONS_LOGGED:
        log.warning(
            "Revision %s: %s lines rejected in all; they are in the rejected_lines table.",
            revision,
            job.counts.rejected,
        )
    return job.counts


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
    total = Counts()
    for part in plan_parts(engine, source, revision, settings):
        total.add(import_part(engine, source, revision, part["part"], settings, on_chunk))
    return total
