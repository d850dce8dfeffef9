"""What kmdb's jobs say about themselves: the revisions and parts in their meta, and their lock.

Every job kmdb enqueues carries meta: `kmdb` (its kind: scan, import,
settle, or join: a no-op between stages of many jobs), `source`, `plan` (the token of the plan that made it), and the
`revisions` it scans or the `parts` ([revision, part] each) it imports.
"""

from __future__ import annotations

from rq.job import Job

from kmdb.load.locks import SETTLE_LOCK, part_lock, revision_lock


def revisions_of(job: Job) -> list[int]:
    """The revisions a scan or import job works on."""
    meta = job.meta or {}
    if "revisions" in meta:
        return list(meta["revisions"])
    if "parts" in meta:
        return sorted({revision for revision, _ in meta["parts"]})
    return [meta["revision"]] if "revision" in meta else []


def parts_of(job: Job) -> list[tuple[int, int | None]]:
    """The (revision, part) units of an import job (part None: a whole revision)."""
    meta = job.meta or {}
    if "parts" in meta:
        return [(revision, part) for revision, part in meta["parts"]]
    return [(meta["revision"], meta.get("part"))]  # a job of one revision (earlier builds)


def lock_of(job: Job) -> str | None:
    """The lock a live job holds from its start to its end: its first revision's or
    part's (a settle's is the settle lock); None for joins, which hold none, and for
    jobs that are not kmdb's."""
    kind = (job.meta or {}).get("kmdb")
    if kind == "import":
        revision, part = parts_of(job)[0]
        if part is not None:
            return part_lock(revision, part)
    if kind in ("scan", "import"):
        return revision_lock(revisions_of(job)[0])
    if kind == "settle":
        return SETTLE_LOCK
    return None
