"""kmdb.orchestrate.graph: the jobs kmdb-import enqueues, as RQ stores and a worker finds them."""

from __future__ import annotations

from pathlib import Path

from redis import Redis
from sqlalchemy import Engine, text

from kmdb.load.database import create_schema
from kmdb.load.settle import settle
from kmdb.orchestrate import queues
from kmdb.orchestrate.graph import Plan, enqueue_import, needs_settle
from kmdb.orchestrate.liveness import kmdb_jobs
from kmdb.sample import write_sample
from kmdb.settings import Settings


def test_the_graph_enqueues_the_job_functions_by_their_paths() -> None:
    # RQ stores a job's function as a dotted path and a worker imports it from there:
    # a path that names nothing fails every job of that kind.
    from rq.utils import import_attribute

    from kmdb.orchestrate import graph, jobs

    assert import_attribute(graph.SCAN_JOB) is jobs.scan_revisions_job
    assert import_attribute(graph.SETTLE_JOB) is jobs.settle_job
    assert import_attribute(graph.IMPORT_JOB) is jobs.import_parts_job


def _planned(settings: Settings, engine: Engine, tmp_path: Path) -> tuple[Path, Redis, Plan]:
    create_schema(engine)
    folder = tmp_path / "export"
    write_sample(folder, 1_500, seed=3, lines_per_revision=500)
    sizes = {n: (folder / "revisions" / f"{n}.json").stat().st_size for n in (1, 2, 3)}
    redis = queues.connect(settings)
    return folder, redis, enqueue_import(settings, redis, engine, str(folder), [1, 2, 3], sizes)


def test_a_revision_queued_or_running_is_not_enqueued_again(
    settings: Settings, engine: Engine, redis_queue: str, tmp_path: Path
) -> None:
    settings = settings.replace(queue=redis_queue)
    folder, redis, first = _planned(settings, engine, tmp_path)
    assert first.enqueued == [1, 2, 3] and first.active == []
    assert first.scans >= 1 and first.parts >= 1 and first.settle is not None
    q = queues.queue(settings, redis)
    jobs = kmdb_jobs(q)
    # Every job names its kind and its export, and runs a function a worker can import.
    assert {job.meta["kmdb"] for job in jobs} == {"scan", "settle", "import"}
    assert {job.meta["source"] for job in jobs if job.meta["kmdb"] != "settle"} == {str(folder)}
    again = enqueue_import(settings, redis, engine, str(folder), [1, 2, 3])
    assert again.enqueued == [] and again.active == [1, 2, 3]
    assert sorted(job.id for job in kmdb_jobs(q)) == sorted(job.id for job in jobs)


def test_a_settle_is_needed_for_sightings_and_aliases_the_last_one_did_not_see(
    engine: Engine,
) -> None:
    create_schema(engine)
    assert not needs_settle(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO alias_sightings (revision, line, name1, name2, t) "
                "VALUES (1, 1, 'anon', 'bob', '2014-01-01 00:00:00')"
            )
        )
    assert needs_settle(engine)
    settle(engine)
    assert not needs_settle(engine)
