"""kmdb.pipeline.inline: an import run in this process, both passes in order, against the model."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqlalchemy import Engine

from kmdb.extract.local import LocalSource
from kmdb.load.engine import make_engine
from kmdb.load.settle import settle
from kmdb.pipeline.import_pass import import_revision
from kmdb.pipeline.inline import import_inline
from kmdb.sample import write_sample
from kmdb.settings import Settings
from tests.helpers import run_import
from tests.model import assert_same, dump, expected, read_export


def test_an_inline_import_removes_the_load_files_that_a_killed_one_left(
    sqlite_url: str, tmp_path: Path
) -> None:
    from kmdb.extract.local import LocalSource

    staging = tmp_path / "staging"
    staging.mkdir()
    left = staging / f"kmdb-events-777-{'d' * 32}.tsv"
    left.write_text("1\n")
    os.utime(left, (time.time() - 7200, time.time() - 7200))
    (tmp_path / "export" / "revisions").mkdir(parents=True)
    settings = Settings(database_url=sqlite_url, tmp_dir=str(staging))
    engine = make_engine(settings)
    import_inline(engine, LocalSource(str(tmp_path / "export")), settings, [])
    engine.dispose()
    assert not left.exists()


def test_sample_export_matches_the_model(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 6_000, seed=3, lines_per_revision=700, first_revision=140)
    settings = settings.replace(batch_size=500)
    assert run_import(engine, folder, settings)[0] == 140
    wanted = expected(read_export(folder))
    assert_same(dump(engine), wanted)
    assert len(wanted.aliases) > 50 and len(wanted.rejected) > 5


def test_importing_twice_changes_nothing(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 2_000, seed=9, lines_per_revision=500)
    run_import(engine, folder, settings)
    first = dump(engine)
    assert run_import(engine, folder, settings) == []
    source = LocalSource(str(folder))
    again = import_revision(engine, source, 1, settings)
    assert again.lines == 0
    settle(engine)
    assert_same(dump(engine), first)
