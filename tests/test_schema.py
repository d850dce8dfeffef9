"""kmdb.load.schema: the tables, as MariaDB and SQLite hold them."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from kmdb.settings import Settings
from tests.helpers import line, run_import, write_export
from tests.model import dump


def test_people_differ_by_case_and_trailing_space(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = write_export(
        tmp_path / "export",
        {1: [line(_n="e", _p=p, _t=5) for p in ("bob", "Bob", "bob ", "böb")]},
    )
    run_import(engine, folder, settings)
    assert sorted(e[2] for e in dump(engine).events) == sorted(["bob", "Bob", "bob ", "böb"])
