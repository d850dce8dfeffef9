"""Finding the revisions to import, importing them in this process, and summing up."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, delete, func, select

from kmdb.errors import NoRevisions, SourceError
from kmdb.extract import stash
from kmdb.extract.framing import Source, find_new, revision_names
from kmdb.load import indexes, schema
from kmdb.load.bulk import is_transient
from kmdb.load.engine import create_schema
from kmdb.load.settle import settle
from kmdb.pipeline.import_pass import (
    MAX_REVISION,
    Counts,
    Unreadable,
    import_revision,
    revision_states,
    scan_revision,
)
from kmdb.settings import Settings

log = logging.getLogger(__name__)


def new_revisions(engine: Engine, source: Source, settings: Settings) -> list[int]:
    """Revisions of the source that are not fully imported yet, in numeric order."""
    r = schema.revisions
    with engine.connect() as conn:
        rows = conn.execute(select(r.c.number, r.c.status, r.c.scanned)).all()
    listed = source.list_revisions()
    if listed is not None:
        rows = _forget_vanished(engine, rows, set(listed))
    statuses = {number: status for number, status, _ in rows}
    done = {n for n, status in statuses.items() if status == "done"}
    start = max(done) + 1 if done else max(1, settings.min_revision)
    found = find_new(source, done, settings, start, set(statuses) - done, listed)
    if not found and listed == []:
        raise NoRevisions(source.name, _parent_if_revisions_folder(source))
    beyond = [n for n in found if n > MAX_REVISION]
    if beyond:
        log.warning(
            "Skipping revisions %s: beyond %s, the largest kmdb can give row ids for.",
            ", ".join(map(str, beyond)),
            MAX_REVISION,
        )
    return [n for n in found if n <= MAX_REVISION]


def _file_alone(exc: BaseException) -> bool:
    """Whether a failure concerns one revision file alone (it cannot be read, or is gone)."""
    return isinstance(exc, SourceError) and not is_transient(exc)


def _forget_vanished(engine: Engine, rows: list, listed: set[int]) -> list:
    """Drop the progress rows of revisions that failed before anything of them was
    imported (not even scanned) and whose file is gone (or was never a revision, as
    007.json); return the rest.

    Such a row would stay "failed" in kmdb-status for a file no import can read. A
    pending row is kept: a queued job of its own may be about to say why it fails.
    """
    gone = [
        n for n, status, scanned in rows if n not in listed and status == "failed" and not scanned
    ]
    if not gone:
        return rows
    r, p = schema.revisions, schema.revision_parts
    with engine.begin() as conn:
        conn.execute(delete(p).where(p.c.revision.in_(gone)))
        conn.execute(delete(r).where(r.c.number.in_(gone)))
    log.warning(
        "Forgot revisions %s: their files are no longer in the export, and nothing of them "
        "was imported.",
        ", ".join(map(str, gone)),
    )
    return [row for row in rows if row[0] not in set(gone)]


def _parent_if_revisions_folder(source: Source) -> str | None:
    """The export's folder when the source given is its revisions/ folder itself."""
    root = getattr(source, "root", None)
    if root is None:
        return None
    if root.name == "revisions" or any(revision_names(p.name for p in root.iterdir())[0]):
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
    """Import the revisions in this process, then settle identities: the jobs' code, no Redis.

    A revision file that cannot be read is marked failed, with why, and the others
    go on; Unreadable, naming it, is raised at the end.
    """
    started = time.perf_counter()
    create_schema(engine)
    stash.remove_leftovers(settings.tmp_dir)
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
            if not _file_alone(exc):
                raise
            failures[revision] = str(exc)
    settle(engine, before_import=True)
    for revision in revisions:
        if revision not in failures:
            try:
                total.add(import_revision(engine, source, revision, settings, on_chunk))
            except Exception as exc:
                if not _file_alone(exc):
                    raise
                failures[revision] = str(exc)
        if on_revision:
            on_revision(revision)
    settle(engine)
    if failures:
        raise Unreadable(
            f"{len(failures)} of {len(revisions)} revisions could not be read and were not "
            f"imported (the others were): {'; '.join(failures.values())} "
            "See SELECT number, error FROM revisions WHERE status = 'failed'; "
            "kmdb-import tries them again."
        )
    return total, time.perf_counter() - started
