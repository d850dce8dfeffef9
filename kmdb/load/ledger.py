"""The progress ledger: how far each revision and each of its parts got, and what it added.

`revisions` holds a row per revision file and `revision_parts` one per part.
Each chunk of an import moves its parts' rows in the same transaction as its
rows (progress_sql), so that the ledger always equals the tables, and an
import that stops resumes exactly where its last commit left it. A scan marks
its revisions scanned, with where their parts start (mark_scanned); when a
part ends, its revision's totals are summed up from its parts (sum_parts).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Connection, Engine, case, func, select, update

from kmdb.errors import KmdbError
from kmdb.extract.framing import LineStarts
from kmdb.load import schema
from kmdb.load.engine import insert_ignore
from kmdb.transform.rows import MAX_REVISION


def now() -> dt.datetime:
    """The current UTC time, as the revisions table stores it."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


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
    def of(cls, row: dict[str, Any]) -> Part:
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
class Move:
    """How far a chunk takes one part: its progress row is updated to this in the chunk's transaction."""

    part: Part
    from_line: int
    to_line: int
    end_offset: int
    properties_done: int
    counts: Counts
    finished: bool


def revision_states(
    engine: Engine, revisions: list[int], sizes: dict[int, int | None] | None = None
) -> dict[int, dict[str, Any]]:
    """The revisions' progress rows, created where missing (with their file sizes, if known:
    scans read small files ahead, and keep them for their import, only when sizes are known)."""
    # Not engine.begin(): an import job's revisions exist already, and a read needs no
    # COMMIT (the connection's return rolls back, a round trip either way).
    with engine.connect() as conn:
        return states_on(conn, revisions, sizes)


def states_on(
    conn: Connection, revisions: list[int], sizes: dict[int, int | None] | None = None
) -> dict[int, dict[str, Any]]:
    """revision_states on the caller's connection, which it commits if it created rows
    (and leaves in the transaction of its read otherwise)."""
    for revision in revisions:
        if not 0 <= revision <= MAX_REVISION:
            raise KmdbError(
                f"Revision {revision} is beyond the largest number kmdb can give row ids for "
                f"({MAX_REVISION}); it was not imported."
            )
    r = schema.revisions
    # Read first: an INSERT IGNORE on existing rows would wait for the row locks of
    # other jobs' commits.
    rows = list(conn.execute(select(r).where(r.c.number.in_(revisions))))
    missing = sorted(set(revisions) - {row.number for row in rows})
    if missing:
        conn.execute(
            insert_ignore(r),
            [{"number": n, "status": "pending", "size": (sizes or {}).get(n)} for n in missing],
        )
        rows += conn.execute(select(r).where(r.c.number.in_(missing))).all()
        conn.commit()
    return {row.number: dict(row._mapping) for row in rows}


def revision_state(engine: Engine, revision: int) -> dict[str, Any]:
    """The revision's progress row, created if missing."""
    return revision_states(engine, [revision])[revision]


def set_status(engine: Engine, revision: int, **values: object) -> None:
    """Update a revision's progress row."""
    with engine.begin() as conn:
        conn.execute(
            update(schema.revisions).where(schema.revisions.c.number == revision).values(**values)
        )


def set_part(engine: Engine, revision: int, part: int, **values: object) -> None:
    """Update a part's progress row."""
    p = schema.revision_parts
    with engine.begin() as conn:
        conn.execute(update(p).where(p.c.revision == revision, p.c.part == part).values(**values))


def error_text(exc: BaseException) -> str:
    """What the error column of a failed revision or part says."""
    return f"{type(exc).__name__}: {exc}"[:2000]


def progress(conn: Connection) -> dict[int, tuple[int, int]]:
    """Lines and bytes read so far per revision, summed over its parts (live, per chunk)."""
    p = schema.revision_parts
    query = (
        select(
            p.c.revision,
            func.sum(p.c.lines_done - p.c.start_line + 1),
            func.sum(p.c.bytes_done - p.c.start_byte),
        )
        .where(p.c.start_line.is_not(None))
        .group_by(p.c.revision)
    )
    return {revision: (int(lines), int(size)) for revision, lines, size in conn.execute(query)}


def part_key(revision: int, part: int) -> str:
    """SQL that picks one part's row, for update_many."""
    return f"revision = {int(revision)} AND part = {int(part)}"


def update_many(
    table: str,
    keys: list[str],
    values: Mapping[str, Sequence[object]],
    conditions: Sequence[str] | None = None,
) -> str:
    """One UPDATE that gives each row picked by keys its own values (and only where its
    condition holds, if conditions are given): one value, or SQL of the row's columns,
    per key and column.

    Statements of their own per row cost small files more than their reading:
    a statement's answer waits for the GIL in a thread that shares it with parsing.
    Keys, values and conditions are kmdb's own integers and expressions, never
    text from an export, so nothing needs quoting.
    """
    sets = ", ".join(
        f"{column} = CASE "
        + " ".join(
            f"WHEN {key} THEN {value}" for key, value in zip(keys, column_values, strict=True)
        )
        + " END"
        for column, column_values in values.items()
    )
    picked = (
        [f"({key})" for key in keys]
        if conditions is None
        else [f"({key} AND {condition})" for key, condition in zip(keys, conditions, strict=True)]
    )
    return f"UPDATE {table} SET {sets} WHERE {' OR '.join(picked)}"


def per_part(moves: list[Move]) -> list[Move]:
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


def progress_sql(moves: list[Move]) -> str:
    """One UPDATE of revision_parts that moves every part of a chunk, each only from where
    the chunk found it (so that its row count tells whether another worker moved one),
    and marks it running (or done, at its end)."""
    values: dict[str, list[object]] = {
        "lines_done": [m.to_line for m in moves],
        "bytes_done": [m.end_offset for m in moves],
        "properties_done": [m.properties_done for m in moves],
    }
    for column in ("events", "properties", "rejected"):
        added = [getattr(m.counts, column) for m in moves]
        if any(added):
            values[column] = [f"{column} + {int(n)}" for n in added]
    # A part is marked running by its first chunk (kmdb.pipeline.chunks.ChunkStream._start),
    # and only from pending: one that the stream marked failed meanwhile stays so.
    values["status"] = [
        "'done'" if m.finished else "CASE WHEN status = 'pending' THEN 'running' ELSE status END"
        for m in moves
    ]
    return update_many(
        "revision_parts",
        [part_key(m.part.revision, m.part.part) for m in moves],
        values,
        [f"lines_done = {int(m.from_line)}" for m in moves],
    )


def sum_parts(engine: Engine, *revisions: int) -> list[int]:
    """Bring the revisions' totals up to date from their parts; mark those done whose parts
    all are, and return them."""
    if not revisions:
        return []
    with engine.connect() as conn:
        done = sum_parts_in(conn, *revisions)
        conn.commit()
    return done


def sum_parts_in(conn: Connection, *revisions: int) -> list[int]:
    """sum_parts on the caller's connection, in a transaction that this begins and the
    caller commits (so that it reads the parts as the commits before it left them)."""
    if not revisions:
        return []
    p, r = schema.revision_parts, schema.revisions
    numbers = sorted(set(revisions))
    # One pass over the parts (five correlated sums and a NOT EXISTS read a revision's
    # parts six times, for every part that ends: quadratic in a file's parts). Read
    # with shared locks, as an UPDATE's subqueries are: a part whose chunk is still
    # committing is waited for, and none moves until this commits, so of two parts
    # that end together, the one that sums last sees both done. Parts are locked
    # before their revisions, the order a job's start (ChunkStream._start) takes them in.
    totals = (
        select(
            p.c.revision,
            func.sum(p.c.lines_done - func.coalesce(p.c.start_line, 1) + 1),
            func.sum(p.c.bytes_done - func.coalesce(p.c.start_byte, 0)),
            func.sum(p.c.events),
            func.sum(p.c.properties),
            func.sum(p.c.rejected),
            func.sum(case((p.c.status != "done", 1), else_=0)),
        )
        .where(p.c.revision.in_(numbers))
        .group_by(p.c.revision)
        .with_for_update(read=True)
    )
    found = {row[0]: [int(value or 0) for value in row[1:]] for row in conn.execute(totals)}
    if not found:
        return []
    columns = ("lines_done", "bytes_done", "events", "properties", "rejected")
    keys = sorted(found)
    conn.exec_driver_sql(
        update_many(
            "revisions",
            [f"number = {int(n)}" for n in keys],
            {c: [found[n][i] for n in keys] for i, c in enumerate(columns)},
        )
    )
    complete = [n for n in keys if found[n][-1] == 0]
    if not complete:
        return []
    marked = conn.execute(
        update(r)
        .where(r.c.number.in_(complete), r.c.status != "done")
        .values(status="done", error=None, finished_at=now())
    ).rowcount
    if not marked:
        return []
    if marked == len(complete):
        return complete
    done = select(r.c.number).where(r.c.number.in_(complete), r.c.status == "done")
    return list(conn.execute(done).scalars())


@dataclass
class ScanMark:
    """What marks a revision scanned: where its parts start and end, and its alias count."""

    revision: int
    parts: list[dict[str, Any]]
    starts: LineStarts
    found: int

    def parts_found(self) -> list[tuple[int, int, int, int]]:
        """(part, start byte, start line, end byte) of each of the revision's parts."""
        starts = self.starts
        ends = [starts.starts[part["first_byte"]].byte for part in self.parts[1:]] + [starts.size]
        found = []
        for part, end in zip(self.parts, ends, strict=True):
            start_byte, start_line = starts.starts[part["first_byte"]]
            found.append((part["part"], start_byte, start_line, max(end, start_byte)))
        return found


# Revisions marked scanned per statement (a CASE each, whose WHENs every row looks through).
MARKS_PER_STATEMENT = 100


def mark_scanned(conn: Connection, marks: list[ScanMark]) -> None:
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
