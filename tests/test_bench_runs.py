"""kmdb.bench.runs: the checks that a benchmark's import is complete, and its export's layout.

Its imports themselves (run_workers, run_inline) run in tests/test_bench.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kmdb.bench.runs import check_complete, join_revisions, table_counts
from kmdb.errors import BenchError
from kmdb.extract.local import LocalSource
from kmdb.load.database import create_schema
from kmdb.load.engine import make_engine
from kmdb.pipeline.inline import import_inline
from kmdb.sample import write_sample
from kmdb.settings import Settings

DONE = {
    "revisions": 3,
    "revisions_done": 3,
    "lines_done": 3_000,
    "rejected": 0,
    "indexes": 5,
}


def test_a_complete_import_passes() -> None:
    check_complete("W=1", DONE, revisions=3, lines=3_000)


def test_an_incomplete_import_names_each_of_its_problems() -> None:
    counts = {**DONE, "revisions_done": 2, "lines_done": 2_000, "rejected": 4, "indexes": 3}
    with pytest.raises(BenchError) as failed:
        check_complete("W=2", counts, revisions=3, lines=3_000)
    assert str(failed.value) == (
        "W=2: the import is incomplete: 2 of 3 revisions done (3 recorded); 2,000 of 3,000 "
        "lines done; 4 lines rejected from a clean export; 3 of the 5 indexes of events and "
        "properties."
    )


def test_the_counts_of_an_inline_import_on_sqlite(tmp_path: Path) -> None:
    stats = write_sample(tmp_path / "export", 1_500, seed=3, lines_per_revision=500, bad_every=0)
    database = tmp_path / "kmdb.sqlite3"
    settings = Settings(database_url=f"sqlite:///{database}", tmp_dir=str(tmp_path / "tmp"))
    engine = make_engine(settings)
    create_schema(engine)
    import_inline(engine, LocalSource(str(tmp_path / "export")), settings, [1, 2, 3])
    engine.dispose()
    counts = table_counts(None, None, database)
    check_complete("inline sqlite", counts, stats.revisions, stats.lines)
    assert counts["lines_done"] == 1_500 and counts["events"] > 0
    assert counts["people"] <= counts["users"]


def test_the_revisions_joined_make_one_file_of_the_same_lines(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 1_000, seed=1, lines_per_revision=300)
    files = sorted((folder / "revisions").glob("*.json"), key=lambda f: int(f.stem))
    before = b"".join(f.read_bytes() for f in files)
    assert len(files) == 4
    join_revisions(folder / "revisions")
    assert [f.name for f in (folder / "revisions").iterdir()] == ["1.json"]
    assert (folder / "revisions" / "1.json").read_bytes() == before
