"""Stops at every stage of the job graph, with every kind of stop, then a resume.

Each case: kmdb-import, two real workers, a pause at one stage (kmdb.faults),
a stop of the worker there (SIGKILL, SIGTERM, SIGINT, or SIGTERM to a whole
kmdb-pool), then kmdb-import and burst workers again. The rows must equal the
model's, and the queue must hold nothing deferred, nothing started by a dead
worker, nothing failed (a stop on request is no failure), every stopped worker
must exit 0, and kmdb-import --wait must return.

The cases of a test run side by side, each with its own database, queue and
workers: they spend most of their time waiting on processes, not computing.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from rq.job import Job
from rq.results import Result
from sqlalchemy import create_engine

from kmdb.faults import STAGES
from kmdb.orchestrate import queues
from kmdb.sample import write_sample
from kmdb.settings import Settings
from tests.helpers import (
    NOTHING_LEFT,
    REDIS_URL,
    burst_workers,
    drop_mysql_database,
    new_mysql_database,
    queue_left,
    run,
    start_logged,
    wait_for,
)
from tests.model import assert_same, dump, expected, read_export

KILL, TERM, INT, POOL = "kill -9", "SIGTERM", "SIGINT", "kmdb-pool SIGTERM"
SIGNALS = {KILL: signal.SIGKILL, TERM: signal.SIGTERM, INT: signal.SIGINT, POOL: signal.SIGTERM}

MATRIX = {
    "kill -9 at each stage": [("mysql", stage, KILL) for stage in STAGES],
    "SIGTERM at each stage": [("mysql", stage, TERM) for stage in STAGES],
    "SIGINT, a pool's SIGTERM, and kill -9 on SQLite": [
        ("mysql", "import", INT),
        ("mysql", "settle-after", INT),
        ("mysql", "import", POOL),
        ("mysql", "settle-after", POOL),
        # SQLite has no server-side locks: a dead worker is told by its process.
        ("sqlite", "settle-before", KILL),
        ("sqlite", "import", KILL),
    ],
}


@pytest.fixture
def databases(tmp_path: Path) -> Iterator[dict[str, list[str]]]:
    """Fresh database URLs, made on demand per kind: made[kind] lists them."""
    made: dict[str, list[str]] = {"mysql": [], "sqlite": []}
    yield made
    for url in made["mysql"]:
        drop_mysql_database(url.rsplit("/", 1)[1])


def _new_database(kind: str, folder: Path, made: dict[str, list[str]]) -> str:
    if kind == "sqlite":
        url = f"sqlite:///{folder / 'kmdb.sqlite3'}"
    else:
        _, url = new_mysql_database()
    made[kind].append(url)
    return url


def _stop_and_resume(url: str, stage: str, stop: str, folder: Path, cli_env: dict[str, str]):
    """One case of the matrix; raises AssertionError with what went wrong."""
    queue = f"kmdb-test-{uuid.uuid4().hex[:12]}"
    settings = Settings(redis_url=REDIS_URL, queue=queue)
    export = folder / "export"
    # Three files of about 60 kB, a job each (parts of up to 100 kB, jobs of half that).
    write_sample(export, 1_200, seed=31, lines_per_revision=400)
    pauses = folder / "pauses"
    pauses.mkdir()
    env = {
        **cli_env,
        "DATABASE_URL": url,
        "KMDB_QUEUE": queue,
        "KMDB_SOURCE": str(export),
        "KMDB_TMP_DIR": str(folder / "tmp"),
        "KMDB_PART_SIZE": "100000",
        "KMDB_WORKERS": "2",
        "KMDB_BATCH_SIZE": "100",
    }
    try:
        run("kmdb-import", env=env)
        paused = {**env, "KMDB_PAUSE_AT": stage, "KMDB_PAUSE_DIR": str(pauses)}
        logs = [folder / "worker-0.log", folder / "worker-1.log"]
        if stop == POOL:
            processes = [start_logged("kmdb-pool", "-n", "2", env=paused, log=logs[0])]
        else:
            processes = [start_logged("kmdb-work", "--burst", env=paused, log=log) for log in logs]
        reached = pauses / f"{stage}.reached"
        try:
            wait_for(
                lambda: reached.exists() and reached.read_text(), 90, 0.05, shown=logs, what=stage
            )
            target = processes[0].pid if stop == POOL else int(reached.read_text())
            if stop != POOL:
                assert target in [p.pid for p in processes]
            os.kill(target, SIGNALS[stop])
            # Burst workers left alone finish what they can (planning a dead one's
            # work again); the stopped ones leave.
            for process in processes:
                wait_for(
                    lambda p=process: p.poll() is not None,
                    180,
                    0.05,
                    shown=logs,
                    what="the workers' exit",
                )
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        if stop in (TERM, INT):
            stopped = next(p for p in processes if p.pid == target)
            assert stopped.returncode == 0, logs[processes.index(stopped)].read_text()[-3000:]
        if stop != POOL:
            # The worker left alone finished its jobs without a failure ...
            survivor = next(p for p in processes if p.pid != target)
            assert survivor.returncode == 0, logs[processes.index(survivor)].read_text()[-3000:]
        if stop == KILL:
            # ... and, after a kill, planned the dead worker's work again and did it all.
            assert_same(dump(create_engine(url)), expected(read_export(export)))

        # The resume: what any user runs after a stop.
        resumed = run("kmdb-import", env=env)
        for result in burst_workers(2, env):
            assert result.returncode == 0, resumed.stdout + result.stderr[-3000:]
        waited = run("kmdb-import", "--wait", env={**env, "KMDB_WAIT_FOR_WORKERS": "5"}, timeout=90)
        assert "All jobs done." in waited.stdout, waited.stdout

        assert_same(dump(create_engine(url)), expected(read_export(export)))
        q = queues.queue(settings, queues.connect(settings))
        assert queue_left(q) == NOTHING_LEFT
        failed = []
        for job in Job.fetch_many(q.failed_job_registry.get_job_ids(), connection=q.connection):
            if job is None:
                continue
            result = Result.fetch_latest(job)
            failed.append(f"{job.id}: {(result.exc_string or '')[-500:] if result else ''}")
        assert failed == []
    finally:
        queues.clear(settings, queues.connect(settings))


@pytest.mark.parametrize("cases", list(MATRIX.values()), ids=list(MATRIX))
def test_a_stop_at_any_stage_resumes_exactly_and_leaves_no_job_behind(
    cases: list[tuple[str, str, str]],
    databases: dict[str, list[str]],
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    folders = []
    for i, (kind, _stage, _stop) in enumerate(cases):
        folder = tmp_path / f"case-{i}"
        folder.mkdir()
        folders.append((_new_database(kind, folder, databases), folder))
    with ThreadPoolExecutor(len(cases)) as pool:
        futures = [
            pool.submit(_stop_and_resume, url, stage, stop, folder, cli_env)
            for (url, folder), (_kind, stage, stop) in zip(folders, cases, strict=True)
        ]
    failures = []
    for (kind, stage, stop), future in zip(cases, futures, strict=True):
        error = future.exception()
        if error is not None:
            failures.append(f"{kind}, {stop} at {stage}: {type(error).__name__}: {error}")
    assert not failures, "\n\n".join(failures)
