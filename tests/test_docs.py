"""Every example of the README and docs/, run as written, so that none can go stale.

Each Markdown file is one session: its ```console blocks run in order in one
fresh folder, with DATABASE_URL on a fresh MariaDB database, the real Redis and
a queue of the test's own. A block's `$ ` lines are commands (run by bash); the
lines after one are its expected output (stdout and stderr together):

- a line `...` stands for any lines, none included;
- `…` inside a line stands for any text on that line;
- a line `^C` means: once the output above it has appeared, send SIGINT.

The docs name the database `kmdata` and its user `kmuser`; the test puts its own
names in their place in commands, and the docs' names back in the output, as it
does for the queue and Redis. ```pycon blocks run as doctests in the same folder,
and ```sql blocks run on the session's database, which must accept them.
`bin/test` is the one command not run here: it is the command that runs this test.
docs/cookbook.md's SQL has a test of its own (tests/test_cookbook.py).
"""

from __future__ import annotations

import doctest
import os
import re
import signal
import subprocess
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pymysql
import pytest
from sqlalchemy import create_engine, text

from tests.helpers import (
    MYSQL_HOST,
    MYSQL_PORT,
    REDIS_URL,
    mysql_admin,
    new_mysql_database,
    sample_bucket,
    unavailable,
)

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(
    r"^(?P<indent> *)```(?P<lang>console|pycon|sql)\n(?P<body>.*?)^(?P=indent)```", re.S | re.M
)
COOKBOOK = ROOT / "docs" / "cookbook.md"  # its SQL has a test of its own, tests/test_cookbook.py
DOCS = [
    path
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    if path != COOKBOOK and BLOCK.search(path.read_text())
]
NOT_RUN = {"bin/test"}
DOC_DATABASE, DOC_USER, DOC_QUEUE = "kmdata", "kmuser", "kmdb"
DOC_REDIS = "redis://localhost:6379/0"
DOC_BUCKET = "my-km-export"
DEADLINE = 180.0


@dataclass
class Command:
    line: str
    expected: list[str]


def commands(body: str) -> list[Command]:
    found: list[Command] = []
    heredoc = None
    for line in body.splitlines():
        if heredoc is not None:
            found[-1].line += "\n" + line
            if line == heredoc:
                heredoc = None
        elif line.startswith("$ "):
            found.append(Command(line[2:], []))
            if marker := re.search(r"<<'?(\w+)'?", line):
                heredoc = marker[1]
        elif found:
            found[-1].expected.append(line.rstrip())
    return found


def pattern(expected: list[str]) -> re.Pattern[str]:
    parts = []
    for line in expected:
        if line == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(".*?".join(re.escape(piece) for piece in line.split("…")) + r"\n")
    return re.compile("".join(parts), re.S)


def matches(expected: list[str], output: str) -> bool:
    lines = [line.rstrip() for line in output.splitlines()]
    return pattern(expected).fullmatch("".join(f"{line}\n" for line in lines)) is not None


class Session:
    """One Markdown file's folder, environment and names."""

    def __init__(self, folder: Path, database: str, queue: str, bucket: str) -> None:
        folder.mkdir()
        self.folder = folder
        self.database = database
        self.user = f"kmu_{uuid.uuid4().hex[:8]}"
        self.queue = queue
        self.bucket = bucket
        self.admin_url = f"mysql+pymysql://root@{MYSQL_HOST}:{MYSQL_PORT}/{database}"
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("KMDB_", "DATABASE_URL"))
        }
        self.env.update(
            PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
            KMDB_REDIS_URL=REDIS_URL,
            KMDB_QUEUE=queue,
            AWS_EC2_METADATA_DISABLED="true",
            COLUMNS="100",
        )
        # The docs' commands run as a user's would, from the folder: bin/ is the clone's,
        # and the database comes from .env (which the README's own steps rewrite).
        (folder / "bin").symlink_to(ROOT / "bin")
        (folder / ".env").write_text(f"DATABASE_URL={self.admin_url}\n")

    def to_real(self, line: str) -> str:
        line = line.replace(DOC_DATABASE, self.database).replace(DOC_USER, self.user)
        line = line.replace(DOC_BUCKET, self.bucket)
        return line.replace(f"KMDB_QUEUE={DOC_QUEUE} ", f"KMDB_QUEUE={self.queue} ")

    def to_doc(self, output: str) -> str:
        output = output.replace(self.database, DOC_DATABASE).replace(self.user, DOC_USER)
        output = output.replace(self.bucket, DOC_BUCKET)
        output = output.replace(self.queue, DOC_QUEUE).replace(REDIS_URL, DOC_REDIS)
        return output.replace(str(self.folder) + "/", "").replace(str(self.folder), ".")

    def run(self, command: Command) -> str:
        if "^C" not in command.expected:
            done = subprocess.run(
                ["bash", "-c", self.to_real(command.line)],
                cwd=self.folder,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=DEADLINE,
            )
            return self.to_doc(done.stdout)
        return self._run_until_interrupt(command)

    def _run_until_interrupt(self, command: Command) -> str:
        before = command.expected[: command.expected.index("^C")] + ["..."]
        log = self.folder / f"out-{uuid.uuid4().hex[:6]}.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                ["bash", "-c", self.to_real(command.line)],
                cwd=self.folder,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            deadline = time.monotonic() + DEADLINE
            while time.monotonic() < deadline and not matches(before, self.to_doc(log.read_text())):
                time.sleep(0.2)
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                # Whatever started it (a terminal, or a script that ignores SIGINT in
                # the commands it puts in the background), Ctrl-C must stop it.
                pytest.fail(f"{command.line!r} did not stop within 60 s of Ctrl-C")
        return self.to_doc(log.read_text())

    def run_sql(self, body: str) -> None:
        engine = create_engine(self.admin_url)
        try:
            with engine.connect() as connection:
                for statement in filter(str.strip, self.to_real(body).split(";")):
                    result = connection.execute(text(statement))
                    if result.returns_rows:
                        result.fetchall()
        finally:
            engine.dispose()

    def run_pycon(self, body: str, name: str) -> None:
        test = doctest.DocTestParser().get_doctest(body, {}, name, name, 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        here = os.getcwd()
        os.chdir(self.folder)
        try:
            runner.run(test)
        finally:
            os.chdir(here)
        assert runner.failures == 0, f"{name}: a pycon example printed something else (above)"


def test_the_matcher_reads_ellipses_and_wildcards() -> None:
    assert matches(["a", "...", "z"], "a\nb\nc\nz\n")
    assert matches(["a", "...", "z"], "a\nz\n")
    assert matches(["took … s"], "took 1.5 s\n")
    assert not matches(["a", "z"], "a\nb\nz\n")
    assert not matches(["took … s"], "took 1.5 ms and more\n")


@pytest.mark.parametrize("doc", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_every_example_runs_as_written(
    doc: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    blocks = list(BLOCK.finditer(doc.read_text()))
    try:
        admin = mysql_admin()
    except pymysql.MySQLError as exc:
        unavailable("MariaDB", exc)
    database, _ = new_mysql_database()
    bucket = DOC_BUCKET
    if DOC_BUCKET in doc.read_text():
        # The docs' bucket: the 20,000-line sample of the quick start, on moto's S3 server.
        request.getfixturevalue("s3_env")
        bucket = sample_bucket(tmp_path / "bucket", 20_000)
    session = Session(tmp_path / "work", database, f"kmdb-test-{uuid.uuid4().hex[:12]}", bucket)
    try:
        for number, block in enumerate(blocks, start=1):
            where = f"{doc.name}, example {number}"
            body = textwrap.dedent(block["body"])
            if block["lang"] == "sql":
                session.run_sql(body)
                continue
            if block["lang"] == "pycon":
                session.run_pycon(body, where)
                continue
            for command in commands(body):
                if command.line in NOT_RUN:
                    continue
                output = session.run(command)
                expected = [line for line in command.expected if line != "^C"]
                assert matches(expected, output), (
                    f"{where}: `$ {command.line}` printed\n{output}\ninstead of\n"
                    + "\n".join(expected)
                )
    finally:
        from kmdb.orchestrate.queues import clear, connect
        from kmdb.settings import Settings

        settings = Settings(redis_url=REDIS_URL, queue=session.queue)
        clear(settings, connect(settings))
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{database}`")
            cursor.execute(f"DROP USER IF EXISTS '{session.user}'@'localhost'")
            cursor.execute(f"DROP USER IF EXISTS '{session.user}'@'127.0.0.1'")
            cursor.execute(f"DROP USER IF EXISTS '{session.user}'@'%'")
        admin.close()


def test_the_contract_in_docs_is_the_shared_one() -> None:
    shared = (
        Path(os.environ.get("KMDB_SHARED_DIR") or ROOT.parent / "shared") / "km-import-rules.md"
    )
    if not shared.exists():
        pytest.skip(f"no {shared} to compare with (set KMDB_SHARED_DIR)")
    copy = ROOT / "docs" / "km-import-rules.md"
    assert copy.read_bytes() == shared.read_bytes(), f"copy {shared} to {copy}"
