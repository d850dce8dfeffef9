"""kmdb.orchestrate.jobs: the RQ job functions, run as a worker runs them, with its environment.

A job waiting to retry with its lock held is in tests/test_workers.py, which runs it in a worker.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from kmdb.errors import SourceError
from kmdb.load.database import create_schema
from kmdb.load.flush import flush
from kmdb.orchestrate.jobs import import_parts_job, scan_revisions_job, settle_job
from kmdb.sample import write_sample
from kmdb.settings import Settings
from tests.model import assert_same, dump, expected, read_export


@pytest.fixture
def worker_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The environment a worker of this database runs its jobs with."""
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("KMDB_TMP_DIR", settings.tmp_dir or "")
    monkeypatch.setenv("KMDB_OUTAGE_WAIT", "0")
    return settings


def test_the_jobs_of_a_graph_run_in_order_give_the_models_rows(
    worker_env: Settings, engine: Engine, tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 1_500, seed=6, lines_per_revision=500)
    create_schema(engine)
    wanted = expected(read_export(folder))
    # Alias lines, some of them the same pair again.
    assert scan_revisions_job(str(folder), [1, 2, 3]) >= len(wanted.aliases) > 0
    before = settle_job(before_import=True)
    assert set(before) == {"new_aliases", "events_moved", "indexes_built"}
    assert before["new_aliases"] == len(wanted.aliases)
    with engine.connect() as conn:
        parts = conn.execute(text("SELECT revision, part FROM revision_parts")).all()
    done = import_parts_job(str(folder), [[r, p] for r, p in parts])
    assert done["lines"] == 1_500
    assert done["events"] == sum(wanted.events.values())
    assert done["rejected"] == len(wanted.rejected)
    assert set(done["timings"]) >= {"parse", "load"}
    settle_job()
    assert_same(dump(engine), wanted)


def test_a_revision_that_is_gone_fails_the_job_at_once(
    worker_env: Settings, engine: Engine, tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 500, seed=6, lines_per_revision=500)
    create_schema(engine)
    (folder / "revisions" / "1.json").unlink()
    with pytest.raises(SourceError, match="Revision 1 is not in"):
        scan_revisions_job(str(folder), [1])


def _run_graph(folder: Path, revisions: list[int], engine: Engine) -> None:
    """The jobs kmdb-import plans for revisions, run in order by one worker, a job per part."""
    scan_revisions_job(str(folder), revisions)
    settle_job(before_import=True)
    with engine.connect() as conn:
        parts = conn.execute(
            text("SELECT revision, part FROM revision_parts WHERE status <> 'done' ORDER BY 1, 2")
        ).all()
    for revision, part in parts:
        import_parts_job(str(folder), [[revision, part]])
    settle_job()


def test_a_workers_jobs_keep_no_id_that_a_flush_or_a_settle_made_void(
    worker_env: Settings, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Jobs of one worker remember the ids they interned (kmdb.pipeline.steps.Remembered).
    # Tiny parts: many jobs, each using what the ones before it remembered.
    monkeypatch.setenv("KMDB_PART_SIZE", "4096")
    first, second = tmp_path / "first", tmp_path / "second"
    write_sample(first, 1_200, seed=11, lines_per_revision=400)
    # Another export, whose names come first in another order: after a flush, the ids
    # that the first export's names had are given to other names.
    write_sample(second, 1_200, seed=12, lines_per_revision=400)
    create_schema(engine)
    _run_graph(first, [1], engine)
    # A later run: its aliases change people whose canonical ids the worker remembers.
    _run_graph(first, [2, 3], engine)
    assert_same(dump(engine), expected(read_export(first)))
    flush(engine)
    _run_graph(second, [1, 2, 3], engine)
    assert_same(dump(engine), expected(read_export(second)))
