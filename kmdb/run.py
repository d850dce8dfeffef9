"""Finding the revisions to import, importing them in this process, and summing up."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, func, select

from kmdb import indexes, schema, stash
from kmdb.db import create_schema
from kmdb.errors import NoRevisions
from kmdb.importer import (
    MAX_REVISION,
    Counts,
    import_revision,
    revision_states,
    scan_revision,
)
from kmdb.people import settle
from kmdb.settings import Settings
from kmdb.source import Source, find_new, revision_numbers

log = logging.getLogger(__name__)


def new_revisions(engine: Engine, source: Source, settings: Settings) -> list[int]:
    """Revisions of the source that are not fully imported yet, in numeric order."""
    r = schema.revisions
    with engine.connect() as conn:
        statuses = dict(conn.execute(select(r.c.number, r.c.status)).all())
    done = {n for n, status in statuses.items() if status == "done"}
    start = max(done) + 1 if done else max(1, settings.min_revision)
    found = find_new(source, done, settings, start, set(statuses) - done)
    if not found and source.list_revisions() == []:
        raise NoRevisions(source.name, _parent_if_revisions_folder(source))
    beyond = [n for n in found if n > MAX_REVISION]
    if beyond:
        log.warning(
            "Skipping revisions %s: beyond %s, the largest kmdb can give row ids for.",
            ", ".join(map(str, beyond)),
            MAX_REVISION,
        )
    return [n for n in found if n <= MAX_REVISION]


def _parent_if_revisions_folder(source: Source) -> str | None:
    """The export's folder when the source given is its revisions/ folder itself."""
    root = getattr(source, "root", None)
    if root is None:
        return None
    if root.name == "revisions" or any(
        revision_numbers(f"revisions/{p.name}" for p in root.iterdir())
    ):
        return str(root.parent)
    return None


@dataclass(frozen=True)
class Summary:
    """The database's totals after an import."""

    revisions: int
    lines: int
    events: int
    properties: int
    people: int
    aliases: int
    rejected: int

    def lines_of_text(self, seconds: float | None = None) -> list[str]:
        """The summary as printed by kmdb-import."""
        shown = [
            f"revisions  {self.revisions:>12,}",
            f"lines      {self.lines:>12,}",
            f"events     {self.events:>12,}",
            f"properties {self.properties:>12,}",
            f"people     {self.people:>12,}",
            f"aliases    {self.aliases:>12,}",
            f"rejected   {self.rejected:>12,}",
        ]
        if seconds is not None:
            shown.append(f"seconds    {seconds:>12,.1f}")
        return shown


def summary(engine: Engine) -> Summary:
    """Count what the database holds."""
    r = schema.revisions

    def count(table: object, *where: object) -> int:
        query = select(func.count()).select_from(table)  # type: ignore[arg-type]
        return conn.execute(query.where(*where)).scalar_one()  # type: ignore[arg-type]

    with engine.connect() as conn:
        done = conn.execute(
            select(func.count(), func.coalesce(func.sum(r.c.lines_done), 0)).where(
                r.c.status == "done"
            )
        ).one()
        return Summary(
            revisions=done[0],
            lines=int(done[1]),
            events=count(schema.events),
            properties=count(schema.properties),
            people=count(schema.users, schema.users.c.canonical_id.is_(None)),
            aliases=count(schema.aliases),
            rejected=count(schema.rejected_lines),
        )


def import_inline(
    engine: Engine,
    source: Source,
    settings: Settings,
    revisions: list[int],
    on_chunk: Callable[[Counts], None] | None = None,
    on_revision: Callable[[int], None] | None = None,
) -> tuple[Counts, float]:
    """Import the revisions in this process, then settle identities: the jobs' code, no Redis."""
    started = time.perf_counter()
    create_schema(engine)
    stash.remove_leftovers(settings.tmp_dir)
    total = Counts()
    # The same passes as the RQ jobs: scan every file for aliases, settle people,
    # import, and settle again for anything that moved meanwhile.
    if revisions:
        indexes.put_off(engine)  # when the tables are empty; the last settle builds them
        revision_states(engine, revisions, {n: source.size(n) for n in revisions})
    for revision in revisions:
        scan_revision(engine, source, revision, settings)
    settle(engine, before_import=True)
    for revision in revisions:
        total.add(import_revision(engine, source, revision, settings, on_chunk))
        if on_revision:
            on_revision(revision)
    settle(engine)
    return total, time.perf_counter() - started
