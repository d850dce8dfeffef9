"""Revision files in parts: planning them, and each part's progress.

A revision file is imported in parts of about KMDB_PART_SIZE bytes, one job
each, so that several workers share a big file. A part owns the lines that
begin in its byte range; the scan finds where its first line starts. The
revision's own row sums its parts up when one of them ends.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import Connection, Engine, func, select, update

from kmdb.errors import SourceError
from kmdb.extract.framing import Source
from kmdb.load import schema
from kmdb.load.engine import insert_ignore
from kmdb.settings import Settings


def now() -> dt.datetime:
    """The current UTC time, as the revisions table stores it."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def in_multiples(count: int, multiple: int) -> int:
    """count made up to a multiple of `multiple` (the pool's workers) when it is over one:
    jobs that many workers finish together."""
    return count if count <= 1 else -(-count // multiple) * multiple


def part_plan(revision: int, size: int, part_size: int, multiple: int = 1) -> list[dict]:
    """Parts of at most part_size bytes for a file of size bytes (one at least), all alike,
    as many as a multiple of `multiple` (the pool's workers) when there are more than one.

    Equal parts, not full ones and a remainder: the last job of a revision is then
    no shorter than the others, and workers run out of work together. Five parts
    for two workers left one of them idle for the fifth.
    """
    count = in_multiples(max(1, -(-size // part_size)), multiple)
    return [
        {"revision": revision, "part": i, "first_byte": i * size // count} for i in range(count)
    ]


def save_plans(engine: Engine, parts: list[dict]) -> None:
    """Record planned parts; a revision planned already keeps its plan."""
    if parts:
        with engine.begin() as conn:
            conn.execute(insert_ignore(schema.revision_parts), parts)


def planned_parts(engine: Engine, revisions: list[int]) -> dict[int, list[dict]]:
    """The planned parts of each of revisions that has a plan, in order."""
    p = schema.revision_parts
    query = select(p).where(p.c.revision.in_(revisions)).order_by(p.c.revision, p.c.part)
    found: dict[int, list[dict]] = {}
    with engine.connect() as conn:
        for row in conn.execute(query):
            found.setdefault(row.revision, []).append(dict(row._mapping))
    return found


def plan_parts(engine: Engine, source: Source, revision: int, settings: Settings) -> list[dict]:
    """The revision's parts, planned once from the file's size and KMDB_PART_SIZE.

    A plan, once made, stays: the ids of the rows already imported depend on it.
    """
    p = schema.revision_parts
    query = select(p).where(p.c.revision == revision).order_by(p.c.part)
    with engine.connect() as conn:
        parts = [dict(row._mapping) for row in conn.execute(query)]
    if not parts:
        size = source.size(revision)
        if size is None:
            raise SourceError(f"Revision {revision} is not in {source.name} any more.")
        save_plans(engine, part_plan(revision, size, settings.part_size, settings.pool_size()))
        with engine.connect() as conn:
            parts = [dict(row._mapping) for row in conn.execute(query)]
    return parts


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
    values: dict[str, Sequence[object]],
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


def set_part(engine: Engine, revision: int, part: int, **values: object) -> None:
    p = schema.revision_parts
    with engine.begin() as conn:
        conn.execute(update(p).where(p.c.revision == revision, p.c.part == part).values(**values))


def sum_parts(engine: Engine, *revisions: int) -> None:
    """Bring the revisions' totals up to date from their parts; mark those done whose parts all are."""
    if not revisions:
        return
    p, r = schema.revision_parts, schema.revisions
    mine = p.c.revision == r.c.number
    numbers = sorted(set(revisions))

    def total(expression: object) -> object:
        return select(func.coalesce(func.sum(expression), 0)).where(mine).scalar_subquery()

    # After the commit of the parts that ended: of two parts that finish together,
    # the one that looks last sees both done.
    with engine.begin() as conn:
        conn.execute(
            update(r)
            .where(r.c.number.in_(numbers))
            .values(
                lines_done=total(p.c.lines_done - func.coalesce(p.c.start_line, 1) + 1),
                bytes_done=total(p.c.bytes_done - func.coalesce(p.c.start_byte, 0)),
                events=total(p.c.events),
                properties=total(p.c.properties),
                rejected=total(p.c.rejected),
            )
        )
        unfinished = select(p.c.part).where(mine, p.c.status != "done").exists()
        conn.execute(
            update(r)
            .where(r.c.number.in_(numbers), r.c.status != "done", ~unfinished)
            .values(status="done", error=None, finished_at=now())
        )
