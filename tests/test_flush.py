"""kmdb.load.flush: the imported data emptied, the filters kept, and the rights checked first.

kmdb-flush as a user runs it is in tests/test_schema_commands.py and tests/test_cli.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from kmdb.errors import ConfigError
from kmdb.load import schema
from kmdb.load.flush import check_can_write, contents, flush
from kmdb.settings import Settings
from tests.helpers import line, mysql_admin, run_import, write_export


def test_a_flush_empties_what_was_imported_says_how_much_and_keeps_the_filters(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    created, removed = flush(engine)
    assert "events" in created and set(removed.values()) == {0}
    folder = write_export(
        tmp_path / "export", {1: [line(_n="e", _p="a", _t=1, k="v"), line(_p="a", _p2="b", _t=2)]}
    )
    run_import(engine, folder, settings)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO ignored_users (name) VALUES ('bot')"))
    before = contents(engine)
    assert before["events"] == 1 and before["properties"] == 1 and before["revisions"] == 1
    created, removed = flush(engine)
    assert created == [] and removed == before
    assert set(contents(engine).values()) == {0}
    assert set(contents(engine)) == {t.name for t in schema.IMPORTED}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM ignored_users")).scalars().all() == ["bot"]


def test_a_user_that_may_not_create_tables_is_told_before_anything_changes(
    mysql_url: str,
) -> None:
    from sqlalchemy.engine import make_url

    from kmdb.load.engine import make_engine

    database = make_url(mysql_url).database
    user = f"kmdb_ro_{database[-8:]}"
    admin = mysql_admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw-ro-1234'")
            cur.execute(f"GRANT SELECT, INSERT ON `{database}`.* TO '{user}'@'%'")
        url = make_url(mysql_url).set(username=user, password="pw-ro-1234")
        engine = make_engine(Settings(database_url=url.render_as_string(hide_password=False)))
        with pytest.raises(ConfigError) as refused:
            check_can_write(engine, "the test's database")
        said = str(refused.value)
        assert said.startswith(
            "kmdb may not empty its tables in the database at the test's database"
        )
        assert said.endswith("or use one that has them.") and "nothing was changed" in said
        engine.dispose()
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        admin.close()


def test_a_user_with_the_rights_leaves_no_scratch_table(engine: Engine) -> None:
    from sqlalchemy import inspect

    before = set(inspect(engine).get_table_names())
    check_can_write(engine, "here")
    assert set(inspect(engine).get_table_names()) == before
