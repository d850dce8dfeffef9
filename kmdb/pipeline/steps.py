"""The steps of a chunk of lines, shared by the two passes of a job.

The scan picks a chunk's alias lines (sightings) and records them; the import
parses a chunk (parse, filters), interns its names, builds and stages its rows
(prepare), then loads them and moves its parts' progress in one transaction
(commit). An Importer holds what a job's chunks share: the filters, the names
interned so far, and the time spent in each step.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, select

from kmdb.errors import ConcurrentImport
from kmdb.load import epoch, schema
from kmdb.load.bulk import TABLES, Staged, load_staged, stage_rows
from kmdb.load.engine import is_mysql
from kmdb.load.filter_tables import read_filters
from kmdb.load.interning import Interner
from kmdb.load.ledger import Counts, Move, Part, per_part, progress_sql
from kmdb.pipeline.chunks import Segment
from kmdb.retry import retrying_lock_conflicts
from kmdb.settings import Settings
from kmdb.transform.identity import alias_pair
from kmdb.transform.parse import Fields, Record, Rejection, parse_fields
from kmdb.transform.rows import (
    ID_BASE,
    REJECTED_TEXT_CHARS,
    EventRow,
    PropertyRow,
    key_names,
    timestamp,
    tsv_rows,
    tuple_rows,
)

log = logging.getLogger(__name__)

# A job forgets the users it has looked up beyond this many (some 200 bytes each).
USER_CACHE = 200_000
# Each revision logs this many rejected lines one by one, then only their count.
REJECTIONS_LOGGED = 5

# Rows of alias_sightings (revision, line, name1, name2, t) and of rejected_lines
# (revision, line, reason, text).
Sighting = tuple[int, int, str, str, str]
RejectedRow = tuple[int, int, str, str]


@dataclass
class Prepared:
    """A chunk parsed and staged, waiting for its transaction."""

    counts: Counts
    staged: list[Staged]
    moves: list[Move]
    # The ids of its rows, (first, last) ranges per table: what _repoint_own may move.
    ids: dict[str, list[tuple[int, int]]] = field(default_factory=dict)


class Remembered:
    """The ids a worker has interned, kept from one job to the next while they hold.

    They hold while the database's epoch and people's generation stay as they
    were when they were read (kmdb.load.epoch): a flush or a settle that changed
    people makes the next job start afresh.
    """

    def __init__(self, engine: Engine) -> None:
        self.keys = Interner(engine, schema.keys, "string")
        self.users = Interner(engine, schema.users, "name", extra="canonical_id")
        self.state: epoch.State | None = None

    def hold_for(self, state: epoch.State) -> None:
        """Forget what was read under another state (or keep nothing without an epoch)."""
        if state.epoch is None or state != self.state:
            self.keys.cache.clear()
            self.users.cache.clear()
        self.state = state


class Importer:
    """What the parts of one job share (filters, interned names, timings), and the steps of a chunk."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        remembered: Remembered | None = None,
        conn: Connection | None = None,
    ) -> None:
        """conn, if given, is where the filters and the epoch are read (a job's first reads
        share a connection); otherwise one of engine's."""
        self.engine = engine
        self.settings = settings
        with contextlib.nullcontext(conn) if conn is not None else engine.connect() as reading:
            self.filters = read_filters(reading)
            # Before any canonical id is read: a settle that changes people after this
            # is seen at each commit (_repoint_own).
            state = epoch.read(reading)
        self.generation = state.generation
        names = remembered or Remembered(engine)
        names.hold_for(state)
        self.keys, self.users = names.keys, names.users
        self.counts = Counts()
        self.rejected: dict[int, int] = {}  # per revision, for the log

    def timed(self, stage: str, since: float) -> float:
        """Add the time since `since` to a stage's timing; return the time now."""
        now = time.perf_counter()
        self.counts.timings[stage] = self.counts.timings.get(stage, 0.0) + now - since
        return now

    def _reject(
        self, rejected: list[RejectedRow], revision: int, line_no: int, why: Rejection
    ) -> None:
        seen = self.rejected.get(revision, 0)
        if seen < REJECTIONS_LOGGED:
            log.warning("Revision %s, line %s rejected: %s", revision, line_no, why.reason)
        self.rejected[revision] = seen + 1
        rejected.append((revision, line_no, why.reason, why.text[:REJECTED_TEXT_CHARS]))

    def sightings(self, revision: int, numbered: list[tuple[int, bytes]]) -> list[Sighting]:
        """First pass: the alias lines among numbered lines, as alias_sightings rows."""
        sightings: list[Sighting] = []
        for line_no, raw in numbered:
            parsed = parse_fields(raw)
            if type(parsed) is not tuple or parsed[0] != "alias":
                continue
            found = Record(*parsed)
            record = self.filters.keep(found) if self.filters.active else found
            if record is None or record.p2 is None:
                continue
            pair = alias_pair(record.p, record.p2)
            if pair is not None:
                name1, name2 = pair
                sightings.append((revision, line_no, name1, name2, timestamp(record.t)))
        return sightings

    def write_sightings(
        self, sightings: list[Sighting], then: Callable[[Connection], None]
    ) -> None:
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
            retrying_lock_conflicts(write)
        finally:
            staged.discard()

    def _parse(self, segment: Segment, rejected: list[RejectedRow]) -> list[tuple[int, Fields]]:
        records: list[tuple[int, Fields]] = []
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
            elif isinstance(parsed, Rejection):  # else None: a blank line
                self._reject(rejected, revision, line_no, parsed)
        return records

    def prepare(self, segments: list[Segment]) -> Prepared:
        """Second pass, in this thread: parse a chunk, intern its names, stage its rows."""
        started = time.perf_counter()
        parsed = []
        rejected: list[RejectedRow] = []
        for segment in segments:
            before = len(rejected)
            parsed.append((segment, self._parse(segment, rejected), len(rejected) - before))
        now = self.timed("parse", started)

        if len(self.users.cache) > USER_CACHE:
            self.users.cache.clear()  # memory stays bounded on a revision of many people
        known = self.users.cache
        wanted = {
            p
            for _, records, _ in parsed
            for _, (_kind, _t, p, _n, _p2, _props) in records
            if p not in known
        }
        user_ids = self.users.ids(wanted)
        now = self.timed("identities", now)

        # LOAD DATA lines on MySQL, row tuples on SQLite (see _rows).
        events: list[Any] = []
        properties: list[Any] = []
        moves: list[Move] = []
        ids: dict[str, list[tuple[int, int]]] = {"events": [], "properties": []}
        for segment, records, rejections in parsed:
            part = segment.part
            seq_before = part.properties_done
            seg_events, seg_properties, seq = self._rows(part, records, user_ids)
            base = part.revision * ID_BASE
            if seg_events:
                # Events are numbered by their lines: the segment's lines hold them all.
                last_line = segment.first + len(segment.raws) - 1
                _add_range(ids["events"], (base + segment.first, base + last_line))
            if seq > seq_before:
                first = base + part.start_byte + seq_before + 1
                _add_range(ids["properties"], (first, first + seq - seq_before - 1))
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
        self.timed("rows", now)
        return Prepared(total, staged, moves, ids)

    def _rows(
        self,
        part: Part,
        records: list[tuple[int, Fields]],
        user_ids: dict[str, tuple[int, int | None]],
    ) -> tuple[list[str], list[str], int] | tuple[list[EventRow], list[PropertyRow], int]:
        rows = tsv_rows if is_mysql(self.engine) else tuple_rows
        base = part.revision * ID_BASE
        args = (records, base, part.start_byte, part.properties_done)
        try:
            # Names of events and properties are few and soon all known: look for new
            # ones only when a row needs one.
            return rows(*args, self.keys.cache, user_ids)
        except KeyError:
            started = time.perf_counter()
            self.keys.ids(key_names(records, self.keys.cache))
            self.timed("identities", started)
            return rows(*args, self.keys.cache, user_ids)

    def commit(self, prepared: Prepared, conn: Connection | None = None) -> Counts:
        """Load a prepared chunk and its parts' progress in one transaction (in the loader
        thread), on conn if given (with no transaction begun), or on one of the engine's."""
        started = time.perf_counter()
        try:
            if conn is None:
                with self.engine.connect() as own:
                    retrying_lock_conflicts(lambda: self._commit(own, prepared))
            else:
                retrying_lock_conflicts(lambda: self._commit(conn, prepared))
        finally:
            for staged in prepared.staged:
                staged.discard()
        self.counts.timings["load"] = self.counts.timings.get("load", 0.0) + (
            time.perf_counter() - started
        )
        self.counts.add(prepared.counts)
        return prepared.counts

    def _commit(self, conn: Connection, p: Prepared) -> None:
        r = schema.revision_parts
        moves = per_part(p.moves)
        with conn.begin():
            # The progress rows are updated first: they lock the parts, so a second
            # worker on the same part waits here and then finds it moved on. One
            # statement for all of them: the loader thread waits for the GIL after
            # each statement, and a chunk of small files moves dozens of parts.
            moved = conn.exec_driver_sql(progress_sql(moves))
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
                raise ConcurrentImport(part.revision, part.part, moved_on.from_line)
            for staged in p.staged:
                load_staged(conn, staged)
            self._repoint_own(conn, p.ids)  # last

    def _repoint_own(self, conn: Connection, ids: dict[str, list[tuple[int, int]]]) -> None:
        """Re-point this chunk's rows of identities whose canonical id a settle changed
        since this job began (and so perhaps after it read them).

        The generation is read with a lock, as the transaction's last statement: a
        settle moves it on as the last statement of its own, after re-pointing the rows
        of the users it changed through user_id's index, which it locks. So a row of
        this chunk was either re-pointed by that settle (which waited for this commit)
        or is written after it; then this reads its generation, and moves the row here.
        """
        generation = locked_generation(conn)
        if generation <= self.generation:
            return
        since = int(self.generation)
        for table, ranges in ids.items():
            if not ranges:
                continue
            within = " OR ".join(f"r.id BETWEEN {int(a)} AND {int(b)}" for a, b in ranges)
            if is_mysql(self.engine):
                sql = (
                    f"UPDATE `{table}` r STRAIGHT_JOIN people_changes c "
                    f"ON c.user_id = r.identity_id AND c.generation > {since} "
                    "STRAIGHT_JOIN users u ON u.id = r.identity_id "
                    f"SET r.user_id = COALESCE(u.canonical_id, u.id) WHERE ({within})"
                )
            else:
                sql = (
                    f"UPDATE {table} AS r SET user_id = (SELECT COALESCE(u.canonical_id, u.id) "
                    "FROM users u WHERE u.id = r.identity_id) "
                    f"WHERE ({within}) AND r.identity_id IN "
                    f"(SELECT user_id FROM people_changes WHERE generation > {since})"
                )
            conn.exec_driver_sql(sql)


def _add_range(ranges: list[tuple[int, int]], new: tuple[int, int]) -> None:
    """Add an id range to a list of them, merged with the last one where they meet."""
    if ranges and ranges[-1][1] + 1 == new[0]:
        ranges[-1] = (ranges[-1][0], new[1])
    else:
        ranges.append(new)


def locked_generation(conn: Connection) -> int:
    """people_state.generation (0 before any settle changed people), by a locking read that
    waits for a settle moving it on to commit (SQLite's writers take turns)."""
    sql = "SELECT generation FROM people_state WHERE id = 1"
    if is_mysql(conn.engine):
        sql += " LOCK IN SHARE MODE"
    return conn.exec_driver_sql(sql).scalar() or 0
