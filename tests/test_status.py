"""kmdb-status: cheap while workers import, and showing only what is current."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import boto3
import pymysql
from sqlalchemy import create_engine, text

from kmdb.extract.local import LocalSource
from kmdb.load.engine import make_engine
from kmdb.orchestrate.status import render, report
from kmdb.pipeline.inline import import_inline
from kmdb.sample import write_sample
from kmdb.settings import Settings
from tests.helpers import burst_workers, burst_workers_ok, enqueue_sample, kmdb_env, run
from tests.model import assert_same, dump, expected, read_export


def test_status_does_not_wait_behind_locks_on_the_imported_tables(
    mysql_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 2_000, seed=41, lines_per_revision=1_000)
    settings = Settings(database_url=mysql_url, tmp_dir=str(tmp_path / "tmp"))
    engine = make_engine(settings)
    import_inline(engine, LocalSource(str(folder)), settings, [1, 2])
    with engine.connect() as conn:
        counts = {
            t: conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one()
            for t in ("events", "properties", "rejected_lines", "aliases")
        }
    url = engine.url
    holder = pymysql.connect(
        host=url.host, port=url.port or 3306, user=url.username, database=url.database
    )
    # What a long load or an index build does to a table: no count of its rows can run.
    holder.cursor().execute(
        "LOCK TABLES users WRITE, aliases WRITE, alias_sightings WRITE, events WRITE, "
        "properties WRITE, rejected_lines WRITE"
    )
    got: list[dict[str, Any]] = []
    try:
        asking = threading.Thread(target=lambda: got.append(report(settings, engine, None)))
        asking.start()
        asking.join(timeout=60)
        answered_under_the_locks = bool(got)
    finally:
        holder.close()
    asking.join(timeout=60)
    assert answered_under_the_locks, "kmdb-status waited for the locks to go"
    rows = got[0]["rows"]
    # The ledger's totals are exact; the tables that could not be counted are said to be estimates.
    assert (rows["events"], rows["properties"], rows["rejected"]) == (
        counts["events"],
        counts["properties"],
        counts["rejected_lines"],
    )
    assert rows["estimated"] == ["users", "aliases", "alias_sightings"]
    assert rows["people"] is None
    shown = "\n".join(render(got[0]))
    assert " ? people" in shown
    assert "Estimated from the table statistics while the database is busy: users" in shown
    # Without the locks everything is counted exactly.
    rows = report(settings, engine, None)["rows"]
    assert rows["estimated"] == [] and rows["aliases"] == counts["aliases"]
    engine.dispose()


def test_status_hides_failures_whose_work_was_redone(
    mysql_url: str,
    redis_queue: str,
    s3_env: dict[str, str],
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "export"
    env = kmdb_env(cli_env, mysql_url, redis_queue, s3_env)
    bucket, env = enqueue_sample(folder, env, 4_000, seed=42, lines_per_revision=1_000)
    s3 = boto3.client("s3")
    # Revision 3 is away while its jobs run: they fail, the others are imported.
    s3.delete_object(Bucket=bucket, Key="revisions/3.json")
    burst_workers(1, env)
    status = run("kmdb-status", env=env).stdout
    assert "2 failed" in status and "Cannot read" in status, status
    # It is back; the next run imports it, and the old failures are history.
    s3.upload_file(str(folder / "revisions" / "3.json"), bucket, "revisions/3.json")
    run("kmdb-import", env=env)
    burst_workers_ok(1, env)
    assert_same(dump(create_engine(mysql_url)), expected(read_export(folder)))
    status = run("kmdb-status", env=env).stdout
    assert "4 known, 4 imported, 0 in progress, 0 failed" in status, status
    assert "0 failed (2 earlier failures since redone)" in status, status
    assert "Cannot read" not in status, status
