"""Fixtures on the real services: a fresh MariaDB database and a clean Redis namespace per test.

Under CI=true a missing service fails the run instead of skipping tests.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from redis import Redis
from sqlalchemy import Engine

from kmdb.load.engine import make_engine
from kmdb.orchestrate import queues
from kmdb.settings import Settings

MYSQL_HOST = os.environ.get("KMDB_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("KMDB_TEST_MYSQL_PORT", "3306"))
MYSQL_USER = os.environ.get("KMDB_TEST_MYSQL_USER", "root")
MYSQL_PASSWORD = os.environ.get("KMDB_TEST_MYSQL_PASSWORD", "")
REDIS_URL = os.environ.get("KMDB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _unavailable(what: str, exc: Exception) -> None:
    message = f"{what} is not reachable ({exc}); bin/test starts or installs it."
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def _mysql_admin() -> pymysql.Connection:
    return pymysql.connect(
        host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, password=MYSQL_PASSWORD, autocommit=True
    )


def new_mysql_database(prefix: str = "kmdb_test") -> tuple[str, str]:
    """Make a new, empty MariaDB database; return its name and URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = _mysql_admin()
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    admin.close()
    auth = MYSQL_USER + (f":{MYSQL_PASSWORD}" if MYSQL_PASSWORD else "")
    return name, f"mysql+pymysql://{auth}@{MYSQL_HOST}:{MYSQL_PORT}/{name}"


def drop_mysql_database(name: str) -> None:
    """Drop a database that new_mysql_database made."""
    admin = _mysql_admin()
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    admin.close()


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """The URL of a new, empty MariaDB database, dropped after the test."""
    try:
        name, url = new_mysql_database()
    except pymysql.MySQLError as exc:
        _unavailable("MariaDB", exc)
    try:
        yield url
    finally:
        drop_mysql_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """The URL of a new SQLite file."""
    return f"sqlite:///{tmp_path / 'kmdb.sqlite3'}"


@pytest.fixture(params=["sqlite", "mysql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs once on SQLite and once on MariaDB."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def redis_queue() -> Iterator[str]:
    """A queue name of the test's own on the real Redis; its jobs and keys are removed after."""
    try:
        Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:
        _unavailable("Redis", exc)
    name = f"kmdb-test-{uuid.uuid4().hex[:12]}"
    yield name
    settings = Settings(redis_url=REDIS_URL, queue=name)
    queues.clear(settings, queues.connect(settings))


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings for the parametrized database, with a private queue name and temp dir."""
    return Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        queue=f"kmdb-test-{uuid.uuid4().hex[:12]}",
        tmp_dir=str(tmp_path / "tmp"),
    )


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    """An engine on the parametrized database."""
    engine = make_engine(settings)
    yield engine
    engine.dispose()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """An environment for running kmdb commands as subprocesses, with no stray .env around."""
    monkeypatch.chdir(tmp_path)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("KMDB_", "DATABASE_URL", "AWS_"))
    }
    env["KMDB_REDIS_URL"] = REDIS_URL
    # boto3 must never go looking for an instance role on the network from a test.
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server over HTTP on a free local port."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """AWS settings that point boto3 (here and in subprocesses) at the moto server."""
    env = {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def upload_export(folder: Path, bucket: str, prefix: str = "") -> None:
    """Copy an export folder into a new bucket of the moto server."""
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket=bucket)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, prefix + str(path.relative_to(folder)))


def sample_bucket(folder: Path, lines: int, prefix: str = "", **sample: int) -> str:
    """Write a sample export to folder and upload it to a new bucket; return the bucket's name."""
    from kmdb.sample import write_sample

    write_sample(folder, lines, **sample)
    bucket = f"km-{uuid.uuid4().hex[:8]}"
    upload_export(folder, bucket, prefix=prefix)
    return bucket
