"""Fixtures on the real services: a fresh MariaDB database and a clean Redis namespace per test.

Under CI=true a missing service fails the run instead of skipping tests. What
tests call themselves is in tests/helpers.py.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from redis import Redis
from sqlalchemy import Engine

from kmdb.bench.s3 import aws_env, s3_server
from kmdb.load.engine import make_engine
from kmdb.orchestrate import queues
from kmdb.settings import Settings
from tests.helpers import REDIS_URL, drop_mysql_database, new_mysql_database, unavailable


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """The URL of a new, empty MariaDB database, dropped after the test."""
    try:
        name, url = new_mysql_database()
    except pymysql.MySQLError as exc:
        unavailable("MariaDB", exc)
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
        unavailable("Redis", exc)
    name = f"kmdb-test-{uuid.uuid4().hex[:12]}"
    yield name
    settings = Settings(redis_url=REDIS_URL, queue=name)
    queues.clear(settings, queues.connect(settings))


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings for the parametrized database, with a private queue name and temp dir;
    whatever the test left of the queue in Redis is removed after (RQ keeps a job's
    dependents without an expiry: tests that plan graphs left thousands of keys)."""
    settings = Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        queue=f"kmdb-test-{uuid.uuid4().hex[:12]}",
        tmp_dir=str(tmp_path / "tmp"),
    )
    yield settings
    with contextlib.suppress(Exception):  # a test of a database alone may have no Redis
        queues.clear(settings, Redis.from_url(REDIS_URL, socket_connect_timeout=2))


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
    """moto's S3 server over HTTP on a free local port (the one bin/bench uses too)."""
    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """AWS settings that point boto3 (here and in subprocesses) at the moto server."""
    env = aws_env(s3_endpoint)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
