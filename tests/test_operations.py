"""Running kmdb for real: status, --wait, realias, partition --from-index, pool and ui."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from pathlib import Path

import boto3
import pytest
from sqlalchemy import create_engine, text

from kmdb.sample import write_sample
from kmdb.transform.parse import Record, parse_line
from tests.helpers import (
    BIN,
    burst_workers_ok,
    enqueue_sample,
    kmdb_env,
    lines_imported,
    run,
    start_burst_workers,
    start_ui,
    stop_ui,
    wait_for,
)
from tests.model import assert_same, dump, expected, read_export


def test_status_and_wait_report_a_failed_revision(
    mysql_url: str,
    redis_queue: str,
    s3_env: dict[str, str],
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "export"
    env = kmdb_env(cli_env, mysql_url, redis_queue, s3_env)
    bucket, env = enqueue_sample(folder, env, 4_000, seed=2, lines_per_revision=1_000)
    # Revision 3 disappears after it was listed: its jobs fail, the rest goes on.
    boto3.client("s3").delete_object(Bucket=bucket, Key="revisions/3.json")
    wait = subprocess.Popen(
        [str(BIN / "kmdb-import"), "--wait"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The worker starts once kmdb-import --wait has found the jobs it watches.
    assert wait.stdout is not None and "Already queued" in wait.stdout.readline()
    (worker,) = start_burst_workers(1, env)
    _out, err = wait.communicate(timeout=300)
    worker.wait(timeout=300)
    assert wait.returncode == 1
    # The burst worker that ran the failed jobs says so too (RQ's own would exit 0).
    assert worker.returncode == 1
    # The four small files share a scan job and an import job; the others go on without 3.
    assert "jobs failed" in err and f"{redis_queue}-scan-1-to-4" in err
    status = run("kmdb-status", env=env).stdout
    assert "Revisions: 4 known, 3 imported" in status
    assert f"{redis_queue}-scan-1-to-4: " in status
    assert "1 of 4 revisions could not be read: revision 3: Cannot read" in status
    assert "1 of 4 parts could not be read: revision 3: Cannot read" in status
    assert "NoSuchKey" in status
    report = json.loads(run("kmdb", "status", "--json", env=env).stdout)
    assert report["revisions"]["imported"] == 3
    assert report["jobs"]["failed"] >= 1
    with create_engine(mysql_url).connect() as conn:
        events = conn.execute(text("SELECT COUNT(*) FROM events")).scalar_one()
    assert report["rows"]["events"] == events > 0


def test_realias_equals_a_fresh_import_with_the_edited_aliases(
    database_url: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 3_000, seed=6, lines_per_revision=1_000)
    env = {**cli_env, "DATABASE_URL": database_url}
    run("kmdb-import", "--inline", "--source", str(folder), env=env)
    revisions = read_export(folder)
    # Edit by hand: drop every alias of one identity, and link two unrelated people.
    alias_lines = [
        (n, i)
        for n, lines in revisions.items()
        for i, raw in enumerate(lines)
        if isinstance(r := parse_line(raw), Record) and r.kind == "alias"
    ]
    victim = parse_line(revisions[alias_lines[0][0]][alias_lines[0][1]]).p
    people = sorted({e[2] for e in expected(revisions).events})
    a, b = people[-1], people[-2]
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM aliases WHERE name1 = :v OR name2 = :v"), {"v": victim})
        first, second = sorted([a, b])
        conn.execute(
            text(
                "INSERT INTO aliases (id, name1, name2, t) VALUES (999999, :a, :b, '2012-01-01 00:00:00')"
            ),
            {"a": first, "b": second},
        )
    out = run("kmdb-realias", env=env).stdout
    assert "People recomputed:" in out
    # The same export, with the alias lines edited the same way, imported fresh.
    edited = {
        n: [
            raw
            for raw in lines
            if not (
                isinstance(r := parse_line(raw), Record)
                and r.kind == "alias"
                and victim in (r.p, r.p2)
            )
        ]
        for n, lines in revisions.items()
    }
    edited[1].append(f'{{"_p":"{a}","_p2":"{b}","_t":1325376000}}'.encode())
    wanted = expected(edited)
    found = dump(engine)
    found.rejected = wanted.rejected  # line numbers moved with the edit; rows are what matter
    assert_same(found, wanted)


def test_partition_from_index(mysql_url: str, cli_env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "index.csv").write_text(
        "Filename,Minimum Timestamp,Maximum Timestamp,Minimum UTC Date,Maximum UTC Date\n"
        "revisions/140.json,1351187402,1351188301,2012-10-25 17:50 GMT,2012-10-25 18:05 GMT\n"
        "revisions/141.json,1353801600,1354000000,2012-11-25 00:00 GMT,2012-11-27 07:06 GMT\n"
    )
    env = {**cli_env, "DATABASE_URL": mysql_url, "KMDB_SOURCE": str(folder)}
    out = run("kmdb-partition", "--from-index", "--days", "7", env=env).stdout
    assert "index.csv: data received from 2012-10-25 to 2012-11-27" in out
    # 2012-10-25 + 7k up to the first boundary after 2012-11-27: 5 ranges and the catch-all.
    assert "events: added 5 partitions, 2012-11-01 to 2012-11-29 (now 6" in out


def test_pool_stops_gracefully_and_the_next_run_goes_on(
    mysql_url: str,
    redis_queue: str,
    s3_env: dict[str, str],
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "export"
    env = kmdb_env(cli_env, mysql_url, redis_queue, s3_env, KMDB_BATCH_SIZE="300")
    _, env = enqueue_sample(folder, env, 60_000, seed=9, lines_per_revision=30_000)
    pool = subprocess.Popen(
        [str(BIN / "kmdb-pool"), "-n", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: lines_imported(mysql_url) >= 3_000)
        pool.send_signal(signal.SIGTERM)
        output, _ = pool.communicate(timeout=60)
    finally:
        pool.kill()
    assert "Starting 2 workers with honcho" in output
    with create_engine(mysql_url).connect() as conn:
        states = dict(conn.execute(text("SELECT number, status FROM revisions")).all())
    assert "stopped" in states.values(), (states, output[-3000:])
    # Nothing half-written: the next run finishes with exactly the right rows.
    run("kmdb-import", env=env)
    burst_workers_ok(2, env)
    assert_same(dump(create_engine(mysql_url)), expected(read_export(folder)))


@pytest.mark.parametrize("sigint_ignored", [False, True], ids=["terminal", "background"])
def test_ui_serves_the_dashboard_until_ctrl_c(
    cli_env: dict[str, str], redis_queue: str, sigint_ignored: bool
) -> None:
    ui, port = start_ui(cli_env, sigint_ignored=sigint_ignored)
    try:

        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as page:
                    return page.status == 200 and b"RQ" in page.read()
            except OSError:
                return False

        wait_for(answers, timeout=30, every=0.5)
        ui.send_signal(signal.SIGINT)
        # Started by a script in the background, SIGINT comes in ignored: Ctrl-C (or a
        # kill -INT) must stop the server all the same.
        ui.wait(timeout=20)
    finally:
        stop_ui(ui)


def test_rate_and_eta_follow_the_running_revisions(sqlite_url: str) -> None:
    import datetime as dt

    from kmdb.load.database import create_schema
    from kmdb.orchestrate.status import render, report
    from kmdb.settings import Settings

    engine = create_engine(sqlite_url)
    create_schema(engine)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows = [
        # done in 10 s: 1 MB, 1,000 lines
        (
            1,
            "done",
            1000,
            1_000_000,
            1_000_000,
            now - dt.timedelta(seconds=30),
            now - dt.timedelta(seconds=20),
        ),
        # running for 10 s: 1 MB of 3 MB read
        (2, "running", 1000, 1_000_000, 3_000_000, now - dt.timedelta(seconds=10), None),
        (3, "pending", 0, 0, 2_000_000, None, None),
    ]
    with engine.begin() as conn:
        for number, status, lines_done, bytes_done, size, started, finished in rows:
            conn.execute(
                text(
                    "INSERT INTO revisions (number, status, scanned, lines_done, bytes_done, "
                    "properties_done, events, properties, aliases, rejected, size, started_at, "
                    "finished_at) VALUES (:n, :s, 1, :l, :b, 0, 0, 0, 0, 0, :size, :st, :fi)"
                ),
                {
                    "n": number,
                    "s": status,
                    "l": lines_done,
                    "b": bytes_done,
                    "size": size,
                    "st": started,
                    "fi": finished,
                },
            )
    data = report(Settings(database_url=sqlite_url), engine, None)
    revisions = data["revisions"]
    # 2 MB in 20 s of revision time, one revision running: 0.1 MB/s; 4 MB left.
    assert abs(revisions["rate_bytes_per_second"] - 100_000) < 2_000
    assert abs(revisions["eta_seconds"] - 40) < 1.5
    assert abs(revisions["rate_lines_per_second"] - 100) < 2
    text_report = "\n".join(render(data))
    assert (
        "Revisions: 3 known, 1 imported, 1 in progress, 0 failed, 0 stopped, 1 pending"
        in text_report
    )
    assert "Rate: 100 lines/s, 0.1 MB/s; ETA 0:00:40" in text_report
    assert "Jobs: Redis not reachable" in text_report
