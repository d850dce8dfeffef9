"""Importing revisions in this process, as the jobs would, and summing up what the database holds."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, func, select

from kmdb.errors import Unreadable, concerns_one_file
from kmdb.extract.export import Source
from kmdb.load import indexes, schema
from kmdb.load.database import create_schema
from kmdb.load.ledger import Counts, revision_states
from kmdb.load.settle import settle
from kmdb.pipeline.import_pass import import_revision
from kmdb.pipeline.leftovers import remove_leftovers
from kmdb.pipeline.scan_pass import scan_revision
from kmdb.settings import Settings


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
        revisions, lines = conn.execute(
            select(func.count(), func.coalesce(func.sum(r.c.lines_done), 0)).where(
                r.c.status == "done"
            )
        ).one()
        return Summary(
            revisions=revisions,
            lines=int(lines),
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
    """Import the revisions in this process, then settle identities: the jobs' code, no Redis.

    A revision file that cannot be read is marked failed, with why, and the others
    go on; Unreadable, naming it, is raised at the end.
    """
    started = time.perf_counter()
    create_schema(engine)
    remove_leftovers(settings.tmp_dir)
    total = Counts()
    failures: dict[int, str] = {}
    # The same passes as the RQ jobs: scan every file for aliases, settle people,
    # import, and settle again for anything that moved meanwhile.
    if revisions:
        indexes.put_off(engine)  # when the tables are empty; the last settle builds them
        revision_states(engine, revisions, {n: source.size(n) for n in revisions})
    for revision in revisions:
        try:
            scan_revision(engine, source, revision, settings)
        except Exception as exc:
            if not concerns_one_file(exc):
                raise
            failures[revision] = str(exc)
    settle(engine, before_import=True)
    for revision in revisions:
        if revision not in failures:
            try:
                total.add(import_revision(engine, source, revision, settings, on_chunk))
            except Exception as exc:
                if not concerns_one_file(exc):
                    raise
                failures[revision] = str(exc)
        if on_revision:
            on_revision(revision)
    settle(engine)
    if failures:
        raise Unreadable.of_run(list(failures.values()), len(revisions))
    return total, time.perf_counter() - started
