"""Revision files in parts: planning them.

A revision file is imported in parts of about KMDB_PART_SIZE bytes, one job
each, so that several workers share a big file. A part owns the lines that
begin in its byte range; the scan finds where its first line starts. A plan,
once saved, stays: the ids of the rows imported depend on it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from kmdb.errors import SourceError
from kmdb.extract.export import Source
from kmdb.load import schema
from kmdb.load.engine import insert_ignore
from kmdb.settings import Settings


def in_multiples(count: int, multiple: int) -> int:
    """count made up to a multiple of `multiple` (the pool's workers) when it is over one:
    jobs that many workers finish together."""
    return count if count <= 1 else -(-count // multiple) * multiple


def part_plan(revision: int, size: int, part_size: int, multiple: int = 1) -> list[dict[str, int]]:
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


def save_plans(engine: Engine, parts: list[dict[str, int]]) -> None:
    """Record planned parts; a revision planned already keeps its plan."""
    if parts:
        with engine.begin() as conn:
            conn.execute(insert_ignore(schema.revision_parts), parts)


def planned_parts(engine: Engine, revisions: list[int]) -> dict[int, list[dict[str, Any]]]:
    """The planned parts of each of revisions that has a plan, in order."""
    p = schema.revision_parts
    query = select(p).where(p.c.revision.in_(revisions)).order_by(p.c.revision, p.c.part)
    found: dict[int, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        for row in conn.execute(query):
            found.setdefault(row.revision, []).append(dict(row._mapping))
    return found


def plan_parts(
    engine: Engine, source: Source, revision: int, settings: Settings
) -> list[dict[str, Any]]:
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
