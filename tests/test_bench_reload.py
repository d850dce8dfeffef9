"""kmdb.bench.reload: the yardstick gives back the same tables it emptied, and says when not."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from kmdb.bench.reload import DUMPED, reload
from kmdb.bench.server import MySQL
from kmdb.extract.local import LocalSource
from kmdb.load.database import create_schema
from kmdb.load.engine import make_engine
from kmdb.pipeline.inline import import_inline
from kmdb.sample import write_sample
from kmdb.settings import Settings
from tests.helpers import mysql_server_url


def test_the_reload_loads_back_every_row_of_the_final_tables(
    mysql_url: str, tmp_path: Path
) -> None:
    write_sample(tmp_path / "export", 1_000, seed=5, lines_per_revision=500, bad_every=0)
    settings = Settings(database_url=mysql_url, tmp_dir=str(tmp_path / "tmp"))
    engine = make_engine(settings)
    create_schema(engine)
    import_inline(engine, LocalSource(str(tmp_path / "export")), settings, [1, 2])

    def rows() -> dict[str, int]:
        with engine.connect() as conn:
            return {
                t: conn.execute(text(f"SELECT COUNT(*) FROM `{t}`")).scalar_one() for t in DUMPED
            }

    before = rows()
    database = make_url(mysql_url).database
    assert database is not None
    seconds, per_table, _cpu = reload(MySQL(mysql_server_url()), database, tmp_path / "dump", None)
    assert rows() == before
    assert {t: n for t, (n, _) in per_table.items()} == before
    assert seconds >= sum(s for _, s in per_table.values()) > 0
    assert sorted(p.name for p in (tmp_path / "dump").iterdir()) == sorted(
        f"{t}.tsv" for t in DUMPED
    )
    engine.dispose()
