"""kmdb.orchestrate.jobs: the RQ job functions, run as a worker runs them, with its environment.

A job waiting to retry with its lock held is in tests/test_workers.py, which runs it in a worker.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from kmdb.errors import SourceError
from kmdb.load.database import create_schema
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
