"""Importing one revision file: source -> parse -> filters -> identities -> bulk load.

Lines are read in chunks of KMDB_BATCH_SIZE; each chunk's rows and the revision's
progress commit in one transaction, so an interrupted import resumes exactly
where its last commit left it, from the same byte offset.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine, insert, select, update

from kmdb import filters as filters_module
from kmdb import schema
from kmdb.errors import KmdbError
from kmdb.identity import alias_pair
from kmdb.load import TABLES, Interner, retrying, write_rows
from kmdb.parse import Record, Rejection, parse_line
from kmdb.settings import Settings
from kmdb.source import Source, lines

log = logging.getLogger(__name__)

# Row ids are revision * ID_BASE + the line number (events) or the property's
# position in the file (properties): the same export always gives the same ids.
ID_BASE = 10**12
# Rejected lines keep this many characters of their text.
REJECTED_TEXT_CHARS = 65_536
# Each revision logs this many rejected lines one by one, then only their count.
REJECTIONS_LOGGED = 5


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


def timestamp(t: int) -> str:
    """A UTC DATETIME literal for seconds since the epoch."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def _ensure_row(engine: Engine, revision: int) -> dict:
    stmt = (
        insert(schema.revisions)
        .values(number=revision, status="pending")
        .prefix_with("IGNORE", dialect="mysql")
        .prefix_with("OR IGNORE", dialect="sqlite")
    )
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


class RevisionImport:
    """The state of one revision's import as it goes through its chunks."""

    def __init__(self, engine: Engine, settings: Settings, revision: int, state: dict) -> None:
        self.engine = engine
        self.settings = settings
        self.revision = revision
        self.lines_done = state["lines_done"]
        self.bytes_done = state["bytes_done"]
        self.properties_done = state["properties_done"]
        with engine.connect() as conn:
            self.filters = filters_module.load(conn)
        self.keys = Interner(engine, schema.keys, "string")
        self.users = Interner(engine, schema.users, "name", extra="canonical_id")
        self.counts = Counts()

    def _clock(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.counts.timings[stage] = self.counts.timings.get(stage, 0.0) + now - since
        return now

    def chunk(self, batch: list[tuple[int, bytes]], end_offset: int) -> Counts:
        """Import one chunk of (line number, raw line) and commit it with the progress."""
        started = time.perf_counter()
        records: list[tuple[int, Record]] = []
        rejected: list[tuple] = []
        for line_no, raw in batch:
            parsed = parse_line(raw)
            if parsed is None:
                continue
            if isinstance(parsed, Rejection):
                log.warning(
                    "Revision %s, line %s rejected: %s", self.revision, line_no, parsed.reason
                )
                rejected.append(
                    (self.revision, line_no, parsed.reason, parsed.text[:REJECTED_TEXT_CHARS])
                )
                continue
            kept = self.filters.keep(parsed)
            if kept is not None:
                records.append((line_no, kept))
        now = self._clock("parse", started)

        key_names: set[str] = set()
        user_names: set[str] = set()
        pairs: dict[int, tuple[str, str]] = {}
        for line_no, r in records:
            if r.kind == "alias":
                pair = alias_pair(r.p, r.p2)  # type: ignore[arg-type]
                if pair is not None:
                    pairs[line_no] = pair
                    user_names.update(pair)
                continue
            user_names.add(r.p)
            if r.n is not None:
                key_names.add(r.n)
            key_names.update(name for name, _ in r.properties)
        key_ids = self.keys.ids(key_names)
        user_ids = self.users.ids(user_names)
        now = self._clock("identities", now)

        rows: dict[str, list[tuple]] = {name: [] for name in TABLES}
        rows["rejected_lines"] = rejected
        base = self.revision * ID_BASE
        seq = self.properties_done
        for line_no, r in records:
            t = timestamp(r.t)
            if r.kind == "alias":
                if line_no in pairs:
                    name1, name2 = pairs[line_no]
                    rows["alias_sightings"].append((self.revision, line_no, name1, name2, t))
                continue
            identity_id, canonical_id = user_ids[r.p]
            user_id = canonical_id or identity_id
            event_id = None
            if r.kind == "event":
                event_id = base + line_no
                rows["events"].append((event_id, t, key_ids[r.n], user_id, identity_id))
            for name, value in r.properties:
                seq += 1
                rows["properties"].append(
                    (base + seq, t, key_ids[name], value, user_id, event_id, identity_id)
                )
        now = self._clock("rows", now)

        counts = Counts(
            lines=len(batch),
            events=len(rows["events"]),
            properties=len(rows["properties"]),
            aliases=len(rows["alias_sightings"]),
            rejected=len(rejected),
            bytes=end_offset - self.bytes_done,
        )
        retrying(lambda: self._commit(rows, counts, end_offset, batch[-1][0], seq))
        self.lines_done, self.bytes_done, self.properties_done = batch[-1][0], end_offset, seq
        self._clock("load", now)
        self.counts.add(counts)
        return counts

    def _commit(
        self,
        rows: dict[str, list[tuple]],
        counts: Counts,
        end_offset: int,
        last_line: int,
        seq: int,
    ) -> None:
        r = schema.revisions
        with self.engine.begin() as conn:
            # The progress row is updated first: it locks the revision, so a second
            # worker on the same revision waits here and then finds it moved on.
            moved = conn.execute(
                update(r)
                .where(r.c.number == self.revision, r.c.lines_done == self.lines_done)
                .values(
                    lines_done=last_line,
                    bytes_done=end_offset,
                    properties_done=seq,
                    events=r.c.events + counts.events,
                    properties=r.c.properties + counts.properties,
                    aliases=r.c.aliases + counts.aliases,
                    rejected=r.c.rejected + counts.rejected,
                )
            )
            if moved.rowcount != 1:
                raise ConcurrentImport(
                    f"Revision {self.revision} was moved past line {self.lines_done} by another "
                    "worker; this worker stops working on it."
                )
            for name, (table, columns) in TABLES.items():
                write_rows(conn, table, columns, rows[name], self.settings.tmp_dir)


def import_revision(
    engine: Engine,
    source: Source,
    revision: int,
    settings: Settings,
    on_chunk: Callable[[Counts], None] | None = None,
) -> Counts:
    """Import what is left of one revision file; a finished one adds nothing."""
    state = _ensure_row(engine, revision)
    if state["status"] == "done":
        return Counts()
    _set_status(
        engine,
        revision,
        status="running",
        error=None,
        size=source.size(revision),
        started_at=state["started_at"] or dt.datetime.now(dt.UTC).replace(tzinfo=None),
    )
    job = RevisionImport(engine, settings, revision, state)
    try:
        batch: list[tuple[int, bytes]] = []
        line_no, end = job.lines_done, job.bytes_done
        waited = time.perf_counter()
        for raw, end in lines(source.chunks(revision, job.bytes_done), job.bytes_done):
            line_no += 1
            batch.append((line_no, raw))
            if len(batch) >= settings.batch_size:
                job._clock("download", waited)
                counts = job.chunk(batch, end)
                if on_chunk:
                    on_chunk(counts)
                batch = []
                waited = time.perf_counter()
        if batch:
            job._clock("download", waited)
            counts = job.chunk(batch, end)
            if on_chunk:
                on_chunk(counts)
    except ConcurrentImport:
        raise
    except Exception as exc:
        _set_status(engine, revision, status="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    _set_status(
        engine, revision, status="done", finished_at=dt.datetime.now(dt.UTC).replace(tzinfo=None)
    )
    if job.counts.rejected > REJECTIONS_LOGGED:
        log.warning(
            "Revision %s: %s lines rejected in all; they are in the rejected_lines table.",
            revision,
            job.counts.rejected,
        )
    return job.counts
