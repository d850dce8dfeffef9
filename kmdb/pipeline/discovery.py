"""Which revisions of an export to import: those the progress ledger does not have done."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import Engine, Row, delete, select

from kmdb.errors import NoRevisions
from kmdb.extract.export import Source, find_new
from kmdb.extract.names import revision_names
from kmdb.load import schema
from kmdb.settings import Settings
from kmdb.transform.rows import MAX_REVISION

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


def _forget_vanished(
    engine: Engine, rows: Sequence[Row[int, str, bool]], listed: set[int]
) -> Sequence[Row[int, str, bool]]:
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
    return [row for row in rows if row.number not in set(gone)]


def _parent_if_revisions_folder(source: Source) -> str | None:
    """The export's folder when the source given is its revisions/ folder itself."""
    root = getattr(source, "root", None)
    if root is None:
        return None
    if root.name == "revisions":
        return str(root.parent)
    numbers, _others = revision_names(p.name for p in root.iterdir())
    if any(numbers):
        return str(root.parent)
    return None
