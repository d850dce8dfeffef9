"""kmdb.pipeline.discovery: which revisions of an export to import, and one bad file among good ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import boto3
import pytest
from sqlalchemy import Engine, create_engine, text

from kmdb.extract.local import LocalSource
from kmdb.extract.s3 import S3Source
from kmdb.load.database import create_schema
from kmdb.pipeline.discovery import new_revisions
from kmdb.pipeline.import_pass import import_revision
from kmdb.pipeline.inline import import_inline
from kmdb.sample import write_sample
from kmdb.settings import Settings
from tests.helpers import burst_workers, line, run, write_export
from tests.model import assert_same, dump, expected, read_export

FORGED = b'{"_n":"forged","_p":"mallory","_t":1351187280}\n'


def _export(folder: Path) -> None:
    """Revisions 1-3 and 8, with files that are not revisions beside them."""
    write_sample(folder, 1_500, seed=21, lines_per_revision=500)
    write_sample(folder / "more", 300, seed=22, lines_per_revision=300, first_revision=8)
    shutil.move(folder / "more" / "revisions" / "8.json", folder / "revisions" / "8.json")
    shutil.rmtree(folder / "more")
    revisions = folder / "revisions"
    (revisions / "007.json").write_bytes(FORGED)  # not revision 7
    (revisions / "08.json").write_bytes(FORGED)  # not revision 8, nor in its way
    (revisions / "old").mkdir()
    (revisions / "old" / "9.json").write_bytes(FORGED)


def test_one_unreadable_revision_stops_nothing_else(
    sqlite_url: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    _export(folder)
    (folder / "revisions" / "5.json").symlink_to(tmp_path / "nowhere.json")  # dangling
    env = {**cli_env, "DATABASE_URL": sqlite_url}
    first = run("kmdb-import", "--inline", "--source", str(folder), env=env, check=False)
    assert first.returncode == 1, first.stderr
    assert "1 of 5 revisions could not be read" in first.stderr, first.stderr
    assert "Revision 5 is not in" in first.stderr
    assert (
        "Skipping 3 files in " + str(folder / "revisions") + " that are not named N.json"
    ) in first.stderr
    assert "007.json, 08.json, old/" in first.stderr
    engine = create_engine(sqlite_url)
    assert_same(dump(engine), expected(read_export(folder)))  # 1, 2, 3 and 8
    with engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT number, status FROM revisions")).all())
        error = conn.execute(text("SELECT error FROM revisions WHERE number = 5")).scalar_one()
    assert rows == {1: "done", 2: "done", 3: "done", 5: "failed", 8: "done"}
    assert "Cannot read revision 5" in error or "is not in" in error, error

    # The bad file removed: its failed row goes with it, and nothing is left to do.
    (folder / "revisions" / "5.json").unlink()
    second = run("kmdb-import", "--inline", "--source", str(folder), env=env)
    assert "Forgot revisions 5" in second.stderr
    with engine.connect() as conn:
        assert conn.execute(text("SELECT number FROM revisions")).scalars().all() == [1, 2, 3, 8]
    assert_same(dump(engine), expected(read_export(folder)))


def test_s3_keys_below_revisions_are_not_revisions(s3_env: dict[str, str], tmp_path: Path) -> None:
    client = boto3.client("s3")
    client.create_bucket(Bucket="km-nested")
    for key in ("revisions/1.json", "revisions/old/revisions/9.json", "revisions/07.json"):
        client.put_object(Bucket="km-nested", Key=key, Body=b"{}\n")
    source = S3Source("s3://km-nested", Settings(tmp_dir=str(tmp_path)))
    assert source.list_revisions() == [1]
    assert source.skipped == ["07.json", "old/revisions/9.json"]


def test_one_unreadable_revision_stops_nothing_else_on_the_queue(
    mysql_url: str, cli_env: dict[str, str], redis_queue: str, tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    _export(folder)
    (folder / "revisions" / "5.json").symlink_to(tmp_path / "nowhere.json")
    env = {
        **cli_env,
        "DATABASE_URL": mysql_url,
        "KMDB_QUEUE": redis_queue,
        "KMDB_SOURCE": str(folder),
    }
    planned = run("kmdb-import", env=env)
    assert "007.json, 08.json, old/" in planned.stderr
    burst_workers(2, env)
    engine = create_engine(mysql_url)
    assert_same(dump(engine), expected(read_export(folder)))
    with engine.connect() as conn:
        rows = {
            n: (s, e)
            for n, s, e in conn.execute(text("SELECT number, status, error FROM revisions"))
        }
    assert {n: s for n, (s, _) in rows.items()} == {
        1: "done",
        2: "done",
        3: "done",
        5: "failed",
        8: "done",
    }
    assert "Cannot read revision 5" in rows[5][1]


def test_revisions_are_found_from_any_number(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = write_export(
        tmp_path / "export",
        {n: [line(_n="e", _p="a", _t=n)] for n in (140, 141, 150, 1000)},
    )
    (folder / "hello.txt").write_text("hi")
    (folder / "revisions" / "notes.txt").write_text("not a revision")
    create_schema(engine)
    source = LocalSource(str(folder))
    assert new_revisions(engine, source, settings) == [140, 141, 150, 1000]
    assert new_revisions(engine, source, settings.replace(min_revision=150)) == [150, 1000]


def test_revisions_beyond_the_id_range_are_refused(
    engine: Engine, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from kmdb.errors import KmdbError
    from kmdb.transform.rows import MAX_REVISION

    folder = write_export(
        tmp_path / "export",
        {n: [line(_n="e", _p="a", _t=1, x=1)] for n in (5, MAX_REVISION, MAX_REVISION + 1)},
    )
    create_schema(engine)
    source = LocalSource(str(folder))
    assert new_revisions(engine, source, settings) == [5, MAX_REVISION]
    assert f"Skipping revisions {MAX_REVISION + 1}" in caplog.text
    with pytest.raises(KmdbError, match="beyond the largest number"):
        import_revision(engine, source, MAX_REVISION + 1, settings)
    import_inline(engine, source, settings, [5, MAX_REVISION])
    with engine.connect() as conn:
        ids = sorted(conn.execute(text("SELECT id FROM events")).scalars())
        props = sorted(conn.execute(text("SELECT id FROM properties")).scalars())
    assert ids == [5 * 10**12 + 1, MAX_REVISION * 10**12 + 1]
    assert props == ids


class NoListing(LocalSource):
    def list_revisions(self):
        return None


def test_without_listing_revisions_are_probed(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = write_export(
        tmp_path / "export", {n: [line(_n="e", _p="a", _t=n)] for n in (1, 2, 5, 20)}
    )
    create_schema(engine)
    source = NoListing(str(folder))
    assert new_revisions(engine, source, settings.replace(revision_lookahead=3)) == [1, 2, 5]
    assert new_revisions(engine, source, settings.replace(revision_lookahead=15)) == [1, 2, 5, 20]
    import_inline(engine, source, settings, [1, 2])
    assert new_revisions(engine, source, settings.replace(revision_lookahead=3)) == [5]
    # A revision begun but not finished below the last finished one is taken again.
    with engine.begin() as conn:
        conn.execute(text("UPDATE revisions SET status = 'failed' WHERE number = 1"))
    assert new_revisions(engine, source, settings.replace(revision_lookahead=3)) == [1, 5]
