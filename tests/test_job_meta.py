"""kmdb.orchestrate.job_meta: what kmdb's jobs say about themselves, and the lock each holds."""

from __future__ import annotations

from redis import Redis
from rq.job import Job

from kmdb.load.locks import SETTLE_LOCK, part_lock, revision_lock
from kmdb.orchestrate.job_meta import lock_of, parts_of, revisions_of
from tests.helpers import REDIS_URL


def _job(**meta: object) -> Job:
    # Made, never saved: meta is all that is read.
    return Job.create(
        "kmdb.orchestrate.jobs.settle_job", connection=Redis.from_url(REDIS_URL), meta=meta
    )


def test_a_scan_names_its_revisions_and_holds_the_first_ones_lock() -> None:
    scan = _job(kmdb="scan", revisions=[7, 8, 9])
    assert revisions_of(scan) == [7, 8, 9]
    assert lock_of(scan) == revision_lock(7)


def test_an_import_names_its_parts_and_holds_the_first_parts_lock() -> None:
    job = _job(kmdb="import", parts=[[3, 1], [3, 2], [2, 0]])
    assert parts_of(job) == [(3, 1), (3, 2), (2, 0)]
    assert revisions_of(job) == [2, 3]
    assert lock_of(job) == part_lock(3, 1)


def test_a_job_of_a_whole_revision_holds_that_revisions_lock() -> None:
    # Jobs of one revision each, as earlier builds enqueued them.
    job = _job(kmdb="import", revision=5)
    assert parts_of(job) == [(5, None)]
    assert revisions_of(job) == [5]
    assert lock_of(job) == revision_lock(5)


def test_a_settle_holds_the_settle_lock_and_other_jobs_none() -> None:
    assert lock_of(_job(kmdb="settle")) == SETTLE_LOCK
    assert revisions_of(_job(kmdb="settle")) == []
    assert lock_of(_job()) is None
    assert lock_of(_job(kmdb="report")) is None
