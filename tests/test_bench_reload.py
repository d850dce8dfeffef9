"""kmdb.bench.reload: the yardstick gives back the same tables it emptied, and says when not."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from kmdb.bench.reload import DUMPED, _secondary_indexes, bulk_path, reload
from kmdb.bench.server import MySQL
from kmdb.extract.local import LocalSource
from kmdb.load.database import create_schema
from kmdb.load.engine import make_engine
from kmdb.pipeline.inline import import_inline
from kmdb.sample import write_sample
from kmdb.settings import Settings
from tests.helpers import mysql_server_url


def _imported(mysql_url: str, tmp_path: Path) -> Engine:
    """An engine on mysql_url's database, into which a sample of 1,000 lines is imported."""
    write_sample(tmp_path / "export", 1_000, seed=5, lines_per_revision=500, bad_every=0)
    settings = Settings(database_url=mysql_url, tmp_dir=str(tmp_path / "tmp"))
    engine = make_engine(settings)
    create_schema(engine)
    import_inline(engine, LocalSource(str(tmp_path / "export")), settings, [1, 2])
    return engine


def test_the_reload_loads_back_every_row_of_the_final_tables(
    mysql_url: str, tmp_path: Path
) -> None:
    engine = _imported(mysql_url, tmp_path)

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


def test_the_best_bulk_path_loads_a_copy_without_indexes_then_builds_them(
    mysql_url: str, tmp_path: Path
) -> None:
    engine = _imported(mysql_url, tmp_path)
    database = make_url(mysql_url).database
    assert database is not None
    mysql = MySQL(mysql_server_url())
    seconds, per_table, indexing = bulk_path(mysql, database, tmp_path / "dump")
    # Every row of every table loaded (the copy's checksums are the tables' own, or it raises).
    with engine.connect() as conn:
        assert {t: n for t, (n, _) in per_table.items()} == {
            t: conn.execute(text(f"SELECT COUNT(*) FROM `{t}`")).scalar_one() for t in DUMPED
        }
    assert seconds >= indexing > 0 and seconds >= sum(s for _, s in per_table.values())
    # The copy is gone, and the tables it copied keep their indexes.
    with mysql.connect() as conn, conn.cursor() as cur:
        cur.execute("SHOW DATABASES LIKE %s", (f"{database}_bulk",))
        assert cur.fetchall() == ()
    engine.dispose()


def test_the_indexes_to_build_are_the_tables_own(mysql_url: str) -> None:
    engine = make_engine(Settings(database_url=mysql_url))
    create_schema(engine)
    database = make_url(mysql_url).database
    with MySQL(mysql_server_url()).connect(database) as conn:
        adding = {t: _secondary_indexes(conn, t) for t in DUMPED}
    assert adding["keys"] == ["ADD UNIQUE INDEX `string` (`string`)"]
    assert "ADD INDEX `aliases_name2` (`name2`)" in adding["aliases"]
    assert "ADD INDEX `properties_event` (`event_id`)" in adding["properties"]
    engine.dispose()
