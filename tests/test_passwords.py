"""No password in any output: a real password-protected MariaDB user and Redis, every URL form."""

from __future__ import annotations

import json
import shutil
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import make_url

from kmdb.sample import write_sample
from kmdb.settings import mask_url, url_secrets
from tests.helpers import (
    PrivateRedis,
    free_port,
    mysql_admin,
    run,
    start_ui,
    stop_ui,
    unavailable,
    wait_for,
)

# Every character that URLs treat specially, and a '!' as in the report.
PASSWORD = "Pw@S3c!r:t/9x"
ENCODED = quote(PASSWORD, safe="")
# Pieces that a half-masked URL would show (a cut at the first '@' or ':').
PIECES = [PASSWORD, ENCODED, "S3c!r", "r:t/9x", "t/9x", "Pw@S3c", "S3c%21r"]


def _shows_no_password(*outputs: str) -> None:
    for output in outputs:
        for piece in PIECES:
            assert piece not in output, f"{piece!r} shown in:\n{output}"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("mysql://kmadv@h/db?password=S3cretPw!", "mysql://kmadv@h/db?password=***"),
        ("mysql://kmadv:S3c@Pw!@h/db", "mysql://kmadv:***@h/db"),
        ("mysql://kmadv:p/w:x@h:3306/db", "mysql://kmadv:***@h:3306/db"),
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("rediss://user:pw@h:6380/1", "rediss://user:***@h:6380/1"),
        ("redis://h/0?ssl=1&Password=pw&x=1", "redis://h/0?ssl=1&Password=***&x=1"),
        ("mysql+pymysql://root@127.0.0.1/kmdb", "mysql+pymysql://root@127.0.0.1/kmdb"),
        ("sqlite:///kmdb.sqlite3", "sqlite:///kmdb.sqlite3"),
    ],
)
def test_every_url_form_is_masked_whole(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    for secret in url_secrets(url):
        assert secret not in mask_url(url)


@pytest.fixture
def password_user(mysql_url: str) -> Iterator[str]:
    """A MariaDB user with PASSWORD and every right on the test's database; dropped after."""
    database = make_url(mysql_url).database
    user = f"kmpw_{uuid.uuid4().hex[:8]}"
    admin = mysql_admin()
    hosts = ("localhost", "127.0.0.1", "%")
    with admin.cursor() as cursor:
        for host in hosts:
            cursor.execute("CREATE USER %s@%s IDENTIFIED BY %s", (user, host, PASSWORD))
            cursor.execute(f"GRANT ALL ON `{database}`.* TO %s@%s", (user, host))
    try:
        yield user
    finally:
        with admin.cursor() as cursor:
            for host in hosts:
                cursor.execute("DROP USER IF EXISTS %s@%s", (user, host))
        admin.close()


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[int]:
    """A private redis-server that asks for PASSWORD, on a free port."""
    if shutil.which("redis-server") is None:
        unavailable("redis-server", FileNotFoundError("not on PATH"))
    server = PrivateRedis(tmp_path / "redis", password=PASSWORD)
    server.start()
    try:
        yield server.port
    finally:
        server.stop()


def test_commands_work_with_passwords_and_never_show_them(
    mysql_url: str,
    password_user: str,
    password_redis: int,
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    db = make_url(mysql_url)
    base = f"{db.host}:{db.port}/{db.database}"
    in_userinfo = f"mysql://{password_user}:{ENCODED}@{base}"
    in_query = f"mysql://{password_user}@{base}?password={ENCODED}"
    redis_forms = [
        f"redis://:{ENCODED}@127.0.0.1:{password_redis}/0",
        f"redis://default:{ENCODED}@127.0.0.1:{password_redis}/1",
        f"redis://127.0.0.1:{password_redis}/2?password={ENCODED}",
    ]
    write_sample(tmp_path / "export", 1_200, lines_per_revision=400)
    source = ["--source", str(tmp_path / "export")]
    outputs = []

    def ok(*args: str, env: dict[str, str]) -> str:
        result = run(*args, env=env)
        outputs.extend([result.stdout, result.stderr])
        return result.stdout

    first = {**cli_env, "DATABASE_URL": in_userinfo, "KMDB_REDIS_URL": redis_forms[0]}
    ok("kmdb-flush", env=first)
    assert "Revisions: 0 known" in ok("kmdb-status", env=first)
    assert "Imported 3 revisions" in ok("kmdb-import", "--inline", *source, env=first)
    assert "Revisions: 3 known, 3 imported" in ok("kmdb-status", env=first)
    ok("kmdb-realias", env=first)
    ok("kmdb-partition", "--min-date", "2012-01-01", "--max-date", "2012-03-01", env=first)

    for redis_url in redis_forms[1:]:
        env = {**cli_env, "DATABASE_URL": in_query, "KMDB_REDIS_URL": redis_url}
        ok("kmdb-flush", env=env)
        assert "Enqueued 3 revisions" in ok("kmdb-import", *source, env=env)
        ok("kmdb-work", "--burst", env=env)
        assert "All jobs done." in ok("kmdb-import", "--wait", *source, env=env)
        report = json.loads(ok("kmdb-status", "--json", env=env))
        assert report["revisions"]["imported"] == 3
        assert report["jobs"]["failed"] == 0

    # Refusals print the URLs too: a wrong password, and one with an unencoded '@'.
    wrong = in_userinfo.replace(ENCODED, quote("x" + PASSWORD, safe=""))
    unencoded = f"mysql://{password_user}:{PASSWORD}@{base}"
    bad_redis = f"redis://:{ENCODED}@127.0.0.1:{free_port()}/0"
    for env_change in (
        {"DATABASE_URL": wrong},
        {"DATABASE_URL": unencoded},
        {"DATABASE_URL": in_query, "KMDB_REDIS_URL": bad_redis},
    ):
        result = run("kmdb-flush", env={**cli_env, **env_change}, check=False)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        outputs.extend([result.stdout, result.stderr])
    _shows_no_password(*outputs)


def test_the_dashboard_gets_the_redis_url_by_environment(
    password_redis: int, cli_env: dict[str, str]
) -> None:
    env = {**cli_env, "KMDB_REDIS_URL": f"redis://:{ENCODED}@127.0.0.1:{password_redis}/0"}
    ui, port = start_ui(env)
    try:
        answered: list[dict] = []

        def answers() -> bool:
            try:
                # The queues' data needs Redis: it answers only if the password reached it.
                url = f"http://127.0.0.1:{port}/0/data/queues.json"
                with urllib.request.urlopen(url, timeout=2) as page:
                    answered.append(json.loads(page.read()))
                    return True
            except OSError:
                return False

        wait_for(answers, timeout=30)
        assert "queues" in answered[0]
        command_line = Path(f"/proc/{ui.pid}/cmdline").read_bytes().decode()
        assert "rq_dashboard" in command_line
        _shows_no_password(command_line)
    finally:
        output = stop_ui(ui)
    assert "rq-dashboard on http://127.0.0.1:" in output
    _shows_no_password(output)
