"""kmdb.pipeline.scan_pass: the first pass, alias lines and where parts start, and its merge of sightings."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from kmdb.extract.local import LocalSource
from kmdb.load.database import create_schema
from kmdb.load.locks import SETTLE_LOCK, held, is_held
from kmdb.load.settle import settle
from kmdb.pipeline.import_pass import import_revision
from kmdb.pipeline.scan_pass import SCAN_MERGE_MIN, scan_revision
from kmdb.settings import Settings
from tests.helpers import (
    aliases_a_scan_merges,
    export_on_mariadb,
    line,
    lock_waits,
    run_import,
    wait_for,
    write_export,
)
from tests.model import assert_same, dump, expected, read_export


@pytest.mark.parametrize(
    "key", [rb"\u005fp2", rb"\u005Fp2", rb"_\u00702", rb"_p\u0032", rb"\u005f\u0070\u0032"]
)
def test_an_alias_key_written_with_escapes_is_still_an_alias(
    engine: Engine, settings: Settings, tmp_path: Path, key: bytes
) -> None:
    # The scan looks only at lines that may hold the key _p2; \u escapes spell it too.
    alias = b'{"_p":"anon","' + key + b'":"bob","_t":5}'
    folder = write_export(tmp_path / "export", {1: [line(_n="e", _p="anon", _t=4)], 2: [alias]})
    run_import(engine, folder, settings)
    result = dump(engine)
    assert result.aliases == {("anon", "bob", "1970-01-01 00:00:05")}
    assert [e[2] for e in result.events] == ["anon"]  # canonical: the lower of the two


def test_a_small_scan_leaves_its_few_sightings_to_the_settle(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    # Below SCAN_MERGE_MIN waiting sightings a merge is not worth its round trips.
    folder = tmp_path / "export"
    write_export(folder, {1: [line(_p="anon", _p2="bob@x", _t=5), line(_n="a", _p="anon", _t=6)]})
    create_schema(engine)
    source = LocalSource(folder)
    assert scan_revision(engine, source, 1, settings) == 1
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM alias_sightings")).scalar() == 1
        assert conn.execute(text("SELECT COUNT(*) FROM aliases")).scalar() == 0
    settled = settle(engine)
    assert (settled.sightings, settled.new_aliases, settled.people_changed) == (1, 1, 1)
    import_revision(engine, source, 1, settings)
    assert_same(dump(engine), expected(read_export(folder)))


def test_a_scan_leaves_its_sightings_when_another_merge_runs(
    mysql_url: str, tmp_path: Path
) -> None:
    # Scans do not queue up behind each other's merges: one that finds the settle
    # lock taken leaves its sightings, and the settle step folds them in.
    engine, settings, source = export_on_mariadb(mysql_url, tmp_path, {1: aliases_a_scan_merges()})
    found: list[int] = []
    with held(engine, SETTLE_LOCK):
        scan = threading.Thread(
            target=lambda: found.append(scan_revision(engine, source, 1, settings))
        )
        scan.start()
        scan.join(timeout=60)
        assert not scan.is_alive(), "the scan waited for the merge lock"
    assert found == [SCAN_MERGE_MIN]
    assert _rows(engine, "alias_sightings") == SCAN_MERGE_MIN
    assert _rows(engine, "aliases") == 0
    settled = settle(engine)
    assert (settled.sightings, settled.new_aliases) == (SCAN_MERGE_MIN, SCAN_MERGE_MIN)
    import_revision(engine, source, 1, settings)
    assert {e[2] for e in dump(engine).events} == {"anon-0"}
    engine.dispose()


def _rows(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()


def test_a_scan_holds_its_revision_lock_while_it_merges(mysql_url: str, tmp_path: Path) -> None:
    # Other workers call a started job dead when its first lock is free
    # (kmdb.orchestrate.liveness.is_dead); a big file's merge takes seconds, and merging
    # after the locks were let go had a waiting worker plan a live scan's graph again.
    engine, settings, source = export_on_mariadb(mysql_url, tmp_path, {7: aliases_a_scan_merges()})
    found: list[int] = []
    scan = threading.Thread(target=lambda: found.append(scan_revision(engine, source, 7, settings)))
    # The merge is the scan's only write to aliases: held up there, the scan is merging.
    with engine.connect() as blocker, blocker.begin():
        blocker.execute(text("SELECT id FROM aliases FOR UPDATE"))
        scan.start()
        wait_for(lambda: lock_waits(engine) == 1, timeout=60, what="the merge to wait")
        assert is_held(engine, "revision:7") is True
    scan.join(timeout=60)
    assert found == [SCAN_MERGE_MIN]
    assert is_held(engine, "revision:7") is False
    assert _rows(engine, "aliases") == SCAN_MERGE_MIN
    engine.dispose()
