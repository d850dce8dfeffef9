"""Hostile servers and hostile exports: what kmdb sends, runs and trusts."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import run, running_mariadb

# --- A MySQL server that answers every query with a LOAD DATA LOCAL request ------------

_CAPABILITIES = (
    0x1  # long password
    | 0x4  # long flag
    | 0x8  # connect with db
    | 0x80  # local files
    | 0x200  # protocol 41
    | 0x2000  # transactions
    | 0x8000  # secure connection
    | 0x20000  # multi results
    | 0x80000  # plugin auth
)


class RogueMySQL:
    """A socket server speaking just enough of MySQL's protocol: a handshake, OK to any
    login, then a LOCAL INFILE request (0xFB) naming `wanted` in answer to every query
    (but SET NAMES and SET AUTOCOMMIT, which PyMySQL reads as a bare OK).

    `queries` holds the queries it got; `received` every byte a client sent after a
    LOCAL INFILE request, which should never hold a file kmdb is not loading.
    """

    def __init__(self, wanted: str) -> None:
        self.wanted = wanted
        self.queries: list[bytes] = []
        self.received = bytearray()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/kmdb"

    def close(self) -> None:
        self._listener.close()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._talk, args=(client,), daemon=True).start()

    @staticmethod
    def _send(client: socket.socket, seq: int, payload: bytes) -> None:
        client.sendall(struct.pack("<I", len(payload))[:3] + bytes([seq & 0xFF]) + payload)

    @staticmethod
    def _read(client: socket.socket) -> tuple[int, bytes]:
        def exactly(n: int) -> bytes:
            data = b""
            while len(data) < n:
                got = client.recv(n - len(data))
                if not got:
                    raise ConnectionError
                data += got
            return data

        header = exactly(4)
        length = int.from_bytes(header[:3], "little")
        return header[3], exactly(length)

    def _talk(self, client: socket.socket) -> None:
        ok = b"\x00\x00\x00\x02\x00\x00\x00"
        with client:
            try:
                caps = struct.pack("<I", _CAPABILITIES)
                self._send(
                    client,
                    0,
                    b"\x0a5.7.99-rogue\x00"
                    + struct.pack("<I", 7)
                    + b"abcdefgh\x00"
                    + caps[:2]
                    + b"\x2d\x02\x00"
                    + caps[2:]
                    + b"\x15"
                    + b"\x00" * 10
                    + b"ijklmnopqrst\x00"
                    + b"mysql_native_password\x00",
                )
                seq, _login = self._read(client)
                self._send(client, seq + 1, ok)
                while True:
                    seq, packet = self._read(client)
                    if packet[:1] == b"\x01":  # COM_QUIT
                        return
                    if packet[:1] != b"\x03":  # a ping, a database change: all fine
                        self._send(client, seq + 1, ok)
                        continue
                    self.queries.append(packet[1:])
                    if packet[1:].upper().startswith((b"SET NAMES", b"SET AUTOCOMMIT")):
                        # PyMySQL reads these two's answers as one packet that must be OK.
                        self._send(client, seq + 1, ok)
                        continue
                    self._send(client, seq + 1, b"\xfb" + self.wanted.encode())
                    seq, data = self._read(client)
                    while data:  # the file's packets, then an empty one
                        self.received += data
                        seq, data = self._read(client)
                    self._send(client, seq + 1, ok)
            except (ConnectionError, OSError):
                return


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A local file no server may read."""
    path = tmp_path / "secret.txt"
    path.write_text(f"SECRET-{uuid.uuid4().hex}\n")
    return path


@pytest.fixture
def rogue(secret: Path) -> Iterator[RogueMySQL]:
    server = RogueMySQL(str(secret))
    yield server
    server.close()


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter: nothing imported before it, as for a user."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )


def _assert_nothing_sent(server: RogueMySQL, secret: Path, what: str) -> None:
    assert server.queries, f"{what} never queried the server"
    assert secret.read_bytes().strip() not in bytes(server.received), f"{what} sent the file"


def test_make_engine_sends_no_file_a_server_asks_for(rogue: RogueMySQL, secret: Path) -> None:
    _python(
        "from kmdb.load.engine import make_engine; from kmdb.settings import Settings; "
        f"make_engine(Settings(database_url={rogue.url!r}))"
    )
    _assert_nothing_sent(rogue, secret, "make_engine")


def test_models_session_sends_no_file_a_server_asks_for(rogue: RogueMySQL, secret: Path) -> None:
    _python(
        "from sqlalchemy import text; from kmdb.models import session\n"
        f"with session({rogue.url!r}) as s:\n"
        "    s.execute(text('SELECT 1'))\n"
    )
    _assert_nothing_sent(rogue, secret, "kmdb.models.session")


def test_flush_and_partition_send_no_file_a_server_asks_for(
    rogue: RogueMySQL, secret: Path, cli_env: dict[str, str], redis_queue: str
) -> None:
    env = {**cli_env, "DATABASE_URL": rogue.url, "KMDB_QUEUE": redis_queue}
    run("kmdb-flush", env=env, check=False)
    run(
        "kmdb-partition",
        "--min-date",
        "2014-01-01",
        "--max-date",
        "2014-03-01",
        env=env,
        check=False,
    )
    _assert_nothing_sent(rogue, secret, "kmdb-flush and kmdb-partition")


def test_a_load_sends_only_the_file_it_is_loading(tmp_path: Path, secret: Path) -> None:
    """Even a file kmdb wrote itself, staged for a later load, is not sent for another."""
    import pymysql

    from kmdb.load.engine import sending

    server = RogueMySQL(str(secret))
    try:
        conn = pymysql.connect(host="127.0.0.1", port=server.port, user="root", local_infile=True)
        other = tmp_path / "other.tsv"
        other.write_text("1\t2\n")
        # Loading another file: the server's request for the secret is refused.
        with (
            sending(conn, str(other)),
            pytest.raises(pymysql.err.OperationalError, match="2068|refused"),
        ):
            conn.cursor().execute("LOAD DATA LOCAL INFILE 'x' INTO TABLE t")
        assert secret.read_bytes().strip() not in bytes(server.received)
        # Loading nothing: refused as well.
        with pytest.raises(pymysql.err.OperationalError):
            conn.cursor().execute("SELECT 1")
        # The file it is loading is sent.
        server.wanted = str(other)
        with sending(conn, str(other)):
            conn.cursor().execute("LOAD DATA LOCAL INFILE 'x' INTO TABLE t")
        assert bytes(server.received) == b"1\t2\n"
        conn.close()
    finally:
        server.close()


# --- A server whose sql_mode holds NO_BACKSLASH_ESCAPES --------------------------------


@pytest.fixture(scope="module")
def no_backslash_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A MariaDB server of this module's own, started with --sql-mode=NO_BACKSLASH_ESCAPES
    (the shared server's global mode is not the tests' to change); yields its URL."""
    with running_mariadb(
        tmp_path_factory.mktemp("mariadb"), "--sql-mode=NO_BACKSLASH_ESCAPES"
    ) as server:
        yield server.url


INJECTION = b'{"_n":"visit","_p":"x\') UNION SELECT SLEEP(4),1,1 -- ","_t":1351187280}'
HOSTILE = [
    INJECTION,
    b'{"_n":"say \\\\\' hi","_p":"back\\\\slash\\\\","_t":1351187281,"k\\\\":"v\\\\\'"}',
    b'{"_n":"tab\\there","_p":"quote\'\'twice","_t":1351187282,"q":"\\"\\\\N"}',
    b'{"_p":"a\\\\\'b","_p2":"c\\\\","_t":1351187283}',
    b'{"_p":"x\\\\","_t":1351187284,"set\\\\":"\\\\\\\\"}',
]


def test_an_import_on_a_no_backslash_escapes_server_stores_hostile_lines_as_data(
    no_backslash_server: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    from sqlalchemy import text

    from kmdb.load.engine import make_engine
    from kmdb.sample import write_sample
    from kmdb.settings import Settings
    from tests.model import assert_same, dump, expected, read_export

    folder = tmp_path / "export"
    write_sample(folder, 1_000, seed=3, lines_per_revision=500)
    (folder / "revisions" / "3.json").write_bytes(b"\n".join(HOSTILE) + b"\n")
    env = {**cli_env, "DATABASE_URL": no_backslash_server, "KMDB_TMP_DIR": str(tmp_path / "t")}
    run("kmdb-import", "--inline", "--source", str(folder), env=env)
    engine = make_engine(Settings(database_url=no_backslash_server))
    try:
        with engine.connect() as conn:
            mode = conn.execute(text("SELECT @@SESSION.sql_mode")).scalar_one()
            assert "NO_BACKSLASH_ESCAPES" not in mode
            names = set(conn.execute(text("SELECT name FROM users")).scalars())
        assert "x') UNION SELECT SLEEP(4),1,1 -- " in names
        assert_same(dump(engine), expected(read_export(folder)))
    finally:
        engine.dispose()


def test_the_interner_binds_names_whatever_the_session_mode(mysql_url: str) -> None:
    """Names reach the server as data even on a session with NO_BACKSLASH_ESCAPES, where a
    backslash-escaped quote would end the string literal."""
    from sqlalchemy import create_engine, text

    from kmdb.load import schema
    from kmdb.load.database import create_schema
    from kmdb.load.interning import Interner

    engine = create_engine(
        mysql_url,
        connect_args={"init_command": "SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'"},
    )
    try:
        create_schema(engine)
        names = ["x') UNION SELECT SLEEP(4),1,1 -- ", "a\\'b", "c\\", "'", "\\'), ('forged"]
        ids = Interner(engine, schema.users, "name").ids(names)
        assert all(name in ids for name in names)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT @@SESSION.sql_mode")).scalar_one() == (
                "NO_BACKSLASH_ESCAPES"
            )
            stored = set(conn.execute(text("SELECT name FROM users")).scalars())
        assert stored == set(names)
    finally:
        engine.dispose()
