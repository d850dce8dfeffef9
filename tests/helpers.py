"""Helpers shared by the tests: the services' addresses, databases and buckets of their own,
running the real commands, waiting, private servers, small exports written by hand.

Test files import what they share from here (and the reference models from
tests/model.py and tests/reports_oracle.py), never from each other or conftest.py.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pymysql
import pytest
from rq import Queue
from rq.job import Job
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from kmdb.bench.private import PrivateMariaDB, PrivateRedis
from kmdb.bench.s3 import free_port, upload_export
from kmdb.settings import Settings

BIN = Path(sys.executable).parent

MYSQL_HOST = os.environ.get("KMDB_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("KMDB_TEST_MYSQL_PORT", "3306"))
MYSQL_USER = os.environ.get("KMDB_TEST_MYSQL_USER", "root")
MYSQL_PASSWORD = os.environ.get("KMDB_TEST_MYSQL_PASSWORD", "")
REDIS_URL = os.environ.get("KMDB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# kmdb.bench's, shared with the benchmarks.
__all__ = ["PrivateMariaDB", "PrivateRedis", "free_port", "upload_export"]


def unavailable(what: str, exc: Exception) -> None:
    """Skip the test for a service that does not answer (fail it under CI=true)."""
    message = f"{what} is not reachable ({exc}); bin/test starts or installs it."
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def mysql_admin() -> pymysql.Connection:
    """A connection to the shared MariaDB server as its administrator, in autocommit."""
    return pymysql.connect(
        host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, password=MYSQL_PASSWORD, autocommit=True
    )


def mysql_server_url() -> str:
    """The shared MariaDB server's URL, without a database."""
    auth = MYSQL_USER + (f":{MYSQL_PASSWORD}" if MYSQL_PASSWORD else "")
    return f"mysql+pymysql://{auth}@{MYSQL_HOST}:{MYSQL_PORT}"


def new_mysql_database(prefix: str = "kmdb_test") -> tuple[str, str]:
    """Make a new, empty MariaDB database; return its name and URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = mysql_admin()
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    admin.close()
    return name, f"{mysql_server_url()}/{name}"


def mysql_databases() -> list[str]:
    """The names of the shared MariaDB server's databases."""
    admin = mysql_admin()
    try:
        with admin.cursor() as cursor:
            cursor.execute("SHOW DATABASES")
            return [row[0] for row in cursor.fetchall()]
    finally:
        admin.close()


def drop_mysql_database(name: str) -> None:
    """Drop a database that new_mysql_database made."""
    admin = mysql_admin()
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    admin.close()


def sample_bucket(folder: Path, lines: int, prefix: str = "", **sample: int) -> str:
    """Write a sample export to folder and upload it to a new bucket; return the bucket's name."""
    from kmdb.sample import write_sample

    write_sample(folder, lines, **sample)
    bucket = f"km-{uuid.uuid4().hex[:8]}"
    upload_export(folder, bucket, prefix=prefix)
    return bucket


def run(command: str, *args: str, env: dict[str, str], check: bool = True, timeout: float = 300):
    """Run a kmdb console script as a user would; return the CompletedProcess."""
    result = subprocess.run(
        [str(BIN / command), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=os.getcwd(),
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{command} {' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def start_burst_workers(count: int, env: dict[str, str], capture: bool = False) -> list:
    """Start `kmdb-work --burst` processes; with capture, their output is kept for communicate().

    Without capture the output is dropped: a pipe nobody reads would stall a chatty worker.
    """
    output = subprocess.PIPE if capture else subprocess.DEVNULL
    return [
        subprocess.Popen(
            [str(BIN / "kmdb-work"), "--burst"], env=env, stdout=output, stderr=output, text=True
        )
        for _ in range(count)
    ]


def burst_workers(count: int, env: dict[str, str]) -> list[subprocess.CompletedProcess]:
    """Run `kmdb-work --burst` processes side by side until all exit; return what each did."""
    results = []
    for proc in start_burst_workers(count, env, capture=True):
        out, err = proc.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def burst_workers_ok(count: int, env: dict[str, str], tail: int = 3000) -> None:
    """Run `kmdb-work --burst` processes side by side; each must exit 0 (else its stderr's tail)."""
    for result in burst_workers(count, env):
        assert result.returncode == 0, result.stderr[-tail:]


def start_logged(command: str, *args: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start a kmdb console script whose stdout and stderr go to log (shown when a wait fails).

    The log is appended to: processes started with the same log share it.
    """
    with log.open("a") as out:
        return subprocess.Popen(
            [str(BIN / command), *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def wait_for(
    condition: Callable[[], object],
    timeout: float = 120,
    every: float = 0.2,
    shown: Path | list[Path] | None = None,
    what: str = "",
) -> None:
    """Poll condition until it is true; past the deadline, fail with the logs in shown."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    # The log of the process waited on, when there is one, says why it did not get there.
    logs = [shown] if isinstance(shown, Path) else shown or []
    said = "\n".join(f"--- {log}\n{log.read_text()[-4000:]}" for log in logs if log.exists())
    raise AssertionError(f"timed out waiting{' for ' + what if what else ''}\n{said}")


_engines: dict[str, Engine] = {}


def lines_imported(url: str) -> int:
    """Lines committed so far by the revisions' parts that are running."""
    # One engine per database: a new engine per poll made polls slow enough, on a cold
    # machine, to miss the seconds in which a revision is running.
    engine = _engines.setdefault(url, create_engine(url, poolclass=NullPool))
    with engine.connect() as conn:
        return conn.execute(
            # Parts record their progress with each chunk they commit.
            text(
                "SELECT COALESCE(SUM(lines_done - start_line + 1), 0) FROM revision_parts "
                "WHERE status = 'running'"
            )
        ).scalar_one()


def kill_with_children(pid: int) -> None:
    """SIGKILL a process and any process it started (none should outlive it)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    for child in children:
        os.kill(child, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)


@contextmanager
def running_mariadb(folder: Path, *extra_server_args: str) -> Iterator[PrivateMariaDB]:
    """A PrivateMariaDB started for the with block (the test skipped where there is no mariadbd).

    Its buffer pool is 64 MB unless extra_server_args say otherwise.
    """
    if shutil.which("mariadbd") is None:
        unavailable("mariadbd", FileNotFoundError("not on PATH"))
    server = PrivateMariaDB(folder, "--innodb-buffer-pool-size=64M", *extra_server_args)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def kmdb_env(
    cli_env: dict[str, str],
    database_url: str,
    queue: str | None = None,
    s3_env: dict[str, str] | None = None,
    **settings: str,
) -> dict[str, str]:
    """The environment of a kmdb command on this database (and queue, and moto's S3), with
    settings such as KMDB_BATCH_SIZE="100" on top."""
    env = {**cli_env, **(s3_env or {}), "DATABASE_URL": database_url}
    if queue is not None:
        env["KMDB_QUEUE"] = queue
    return {**env, **settings}


def start_ui(env: dict[str, str], sigint_ignored: bool = False) -> tuple[subprocess.Popen, int]:
    """Start `kmdb-ui` on a free port; return the process (its output piped) and the port.

    sigint_ignored: as a shell script starts a command in the background."""
    port = free_port()
    ui = subprocess.Popen(
        [str(BIN / "kmdb-ui"), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        if sigint_ignored
        else None,
    )
    return ui, port


def stop_ui(ui: subprocess.Popen) -> str:
    """Stop `kmdb-ui` as Ctrl-C does (killed if it lingers); return what it printed."""
    ui.send_signal(signal.SIGINT)
    try:
        output, _ = ui.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        ui.kill()
        output, _ = ui.communicate()
    return output


def enqueue_sample(
    folder: Path, env: dict[str, str], lines: int, prefix: str = "", **sample: int
) -> tuple[str, dict[str, str]]:
    """Write a sample export to folder, upload it to a new bucket, and run kmdb-flush and
    kmdb-import (no worker) with env and that AWS_BUCKET; return the bucket and the env."""
    bucket = sample_bucket(folder, lines, prefix=prefix, **sample)
    env = {**env, "AWS_BUCKET": bucket}
    run("kmdb-flush", env=env)
    run("kmdb-import", env=env)
    return bucket, env


def queue_left(q: Queue) -> dict[str, int]:
    """What a queue still holds, registry by registry (none cleaned up first)."""
    return {
        "queued": q.count,
        "started": q.started_job_registry.get_job_count(cleanup=False),
        "deferred": q.deferred_job_registry.get_job_count(cleanup=False),
        "ready": q.ready_job_registry.get_job_count(cleanup=False),
    }


NOTHING_LEFT = {"queued": 0, "started": 0, "deferred": 0, "ready": 0}


def write_export(folder: Path, revisions: dict[int, list[bytes]]) -> Path:
    """An export folder with revisions/N.json of the lines given (each ended by a newline)."""
    (folder / "revisions").mkdir(parents=True, exist_ok=True)
    for number, lines in revisions.items():
        (folder / "revisions" / f"{number}.json").write_bytes(
            b"".join(line + b"\n" for line in lines)
        )
    return folder


def line(**fields: object) -> bytes:
    """An export's line of these fields, as JSON."""
    import orjson

    return orjson.dumps(fields)


# Two revisions of a first run: anon-b's and zed's events and properties, then anon-b
# aliased to bob@x. A later run's aliases to a numeric identity move them all.
ANON_B_AND_ZED = {
    7: [
        line(_n="visited", _p="anon-b", _t=100, url="x"),
        line(_p="anon-b", _t=101, plan="free"),
        line(_n="visited", _p="zed", _t=102),
    ],
    8: [line(_p="anon-b", _p2="bob@x", _t=200), line(_n="paid", _p="bob@x", _t=201)],
}


def run_import(engine: Engine, folder: Path, settings: Settings, source: Any = None) -> list[int]:
    """Import an export folder (or source) inline into engine's database, its schema made
    first; return the revisions it found to import."""
    from kmdb.extract.local import LocalSource
    from kmdb.load.database import create_schema
    from kmdb.pipeline.discovery import new_revisions
    from kmdb.pipeline.inline import import_inline

    source = LocalSource(str(folder)) if source is None else source
    create_schema(engine)
    todo = new_revisions(engine, source, settings)
    import_inline(engine, source, settings, todo)
    return todo


def export_on_mariadb(
    mysql_url: str, tmp_path: Path, revisions: dict[int, list[bytes]]
) -> tuple[Engine, Settings, Any]:
    """A MariaDB schema and an export of these revisions; return the engine, the settings
    and the export's LocalSource."""
    from kmdb.extract.local import LocalSource
    from kmdb.load.database import create_schema
    from kmdb.load.engine import make_engine

    settings = Settings(database_url=mysql_url, tmp_dir=str(tmp_path / "tmp"))
    engine = make_engine(settings)
    create_schema(engine)
    return engine, settings, LocalSource(write_export(tmp_path / "export", revisions))


def one_alias_on_mariadb(
    mysql_url: str, tmp_path: Path, revision: int
) -> tuple[Engine, Settings, Any]:
    """export_on_mariadb with one revision: an alias line, then an event."""
    lines = [line(_p="anon", _p2="bob@x", _t=5), line(_n="a", _p="anon", _t=6)]
    return export_on_mariadb(mysql_url, tmp_path, {revision: lines})


def aliases_a_scan_merges() -> list[bytes]:
    """Lines of a revision whose scan merges its sightings itself: as many alias lines as
    kmdb.pipeline.scan_pass.SCAN_MERGE_MIN (anon-N with user-N@x), then an event of anon-0."""
    from kmdb.pipeline.scan_pass import SCAN_MERGE_MIN

    aliases = [line(_p=f"anon-{i}", _p2=f"user-{i}@x", _t=5 + i) for i in range(SCAN_MERGE_MIN)]
    return [*aliases, line(_n="a", _p="user-0@x", _t=2)]


def lock_waits(engine: Engine) -> int:
    """Transactions on engine's MariaDB database that wait for a lock just now."""
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT COUNT(*) FROM information_schema.innodb_trx t "
                "JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
                "WHERE t.trx_state = 'LOCK WAIT' AND p.db = DATABASE()"
            )
        ).scalar_one()


def chunked_source(folder: Path, piece: int, fail_after: int | None = None) -> Any:
    """A folder source whose reads come in chunks of piece bytes (the folder's own are big), and
    stop with Interrupted after fail_after chunks, as a killed worker's would."""
    from kmdb.extract.local import LocalSource

    class Chunked(LocalSource):
        def chunks(self, revision: int, offset: int = 0, end: int | None = None) -> Iterator[bytes]:
            count = 0
            for chunk in super().chunks(revision, offset, end):
                for at in range(0, len(chunk), piece):
                    if fail_after is not None and count >= fail_after:
                        raise Interrupted("stopped")
                    count += 1
                    yield chunk[at : at + piece]

    return Chunked(str(folder))


class Interrupted(Exception):
    """A read stopped short (chunked_source's fail_after)."""


# Date ranges that every report is checked over: none, open at either end, a day.
REPORT_RANGES = [
    (None, None),
    ("2013-03-10", None),
    (None, "2013-04-20"),
    ("2013-03-15", "2013-04-30"),
    ("2013-04-01", "2013-04-01"),
]


def imported_world(engine: Engine, settings: Settings, tmp_path: Path, seed: int) -> Any:
    """A world of tests/reports_oracle.py, written as an export and imported inline through
    kmdb's own import; returns the world."""
    from kmdb.extract.local import LocalSource
    from kmdb.load.database import create_schema
    from kmdb.pipeline.discovery import new_revisions
    from kmdb.pipeline.inline import import_inline
    from tests import reports_oracle as oracle

    world = oracle.generate(seed)
    source = LocalSource(str(oracle.write(world, tmp_path / "export")))
    create_schema(engine)
    import_inline(engine, source, settings, new_revisions(engine, source, settings))
    return world


def same_report(got: dict, want: dict) -> None:
    """Equal, with certainties compared to the 6th place (Φ computed two ways)."""
    if got.get("report") == "abtest":
        for variant in want["variants"]:
            if variant["certainty"] is not None:
                variant["certainty"] = pytest.approx(variant["certainty"], abs=2e-6)
    assert got == want


def as_started_by_ghost(q: Queue, job: Job, expires: float = 3600) -> None:
    """The job as a worker left it that died a minute ago (no lock, no process, no key)."""
    redis = q.connection
    redis.lrem(q.key, 0, job.id)
    redis.zrem(q.deferred_job_registry.key, job.id)
    job.set_status("started")
    job.started_at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    job.worker_name = "ghost-worker"
    job.save()
    redis.zadd(q.started_job_registry.key, {f"{job.id}:ghost-execution": time.time() + expires})
