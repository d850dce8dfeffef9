"""Engines and connections: PyMySQL with LOAD DATA LOCAL allowed, SQLite tuned for one writer."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pymysql
import pymysql.connections
from sqlalchemy import Engine, Insert, Table, create_engine, event, insert, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from kmdb.errors import ConfigError, DatabaseUnavailable
from kmdb.settings import Settings, mask_url


def is_mysql(engine: Engine) -> bool:
    """True on MySQL and MariaDB."""
    return engine.dialect.name in ("mysql", "mariadb")


def insert_ignore(table: Table) -> Insert:
    """An INSERT that skips rows whose unique key is taken, on MySQL and SQLite alike."""
    return (
        insert(table)
        .prefix_with("IGNORE", dialect="mysql")
        .prefix_with("OR IGNORE", dialect="sqlite")
    )


# The session's sql_mode, set on every MySQL connection kmdb makes: a server's own
# mode may hold NO_BACKSLASH_ESCAPES (which changes how LOAD DATA's field options
# and every backslash in SQL text are read) or ANSI_QUOTES. Strict, as MariaDB's
# default is, and made only of modes that MySQL 8 knows as well.
SQL_MODE = "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"

# LOAD DATA LOCAL lets the server name the file the client sends, in answer to any
# query at all. So a connection sends a file only while kmdb is loading that very
# file on it (see sending); whatever else a server asks for is refused.
_SENDING: dict[int, str] = {}
# PyMySQL sends a file in 16 KB packets. The loader thread needs the GIL again after
# each one, which the parsing thread holds for milliseconds at a time: with small
# packets the server waits on Python. Half a megabyte stays far below any server's
# max_allowed_packet (1 MB at the very least).
PACKET = 1 << 19


def _send_only_what_is_loading(filename: str | bytes, conn: Any) -> None:
    name = os.fsdecode(filename)
    if _SENDING.get(id(conn)) != name:
        raise pymysql.err.OperationalError(
            2068,
            f"kmdb refused to send {name!r}: LOAD DATA LOCAL sends only the file kmdb is "
            "loading on that connection.",
        )
    size = min(conn.max_allowed_packet, PACKET)
    try:
        with open(name, "rb") as file:
            while chunk := file.read(size):
                conn.write_packet(chunk)
    except OSError as exc:
        raise pymysql.err.OperationalError(2068, f"Cannot read load file {name!r}: {exc}") from exc


# Installed when kmdb.load.engine is imported: every connection kmdb makes, through make_engine
# or pymysql.connect, is made after that import.
pymysql.connections._send_local_file = _send_only_what_is_loading  # type: ignore[attr-defined]  # private, not in types-PyMySQL


@contextmanager
def sending(dbapi_connection: Any, path: str) -> Iterator[None]:
    """Let LOAD DATA LOCAL send path, and no other file, on this PyMySQL connection
    while the block runs."""
    _SENDING[id(dbapi_connection)] = os.fsdecode(path)
    try:
        yield
    finally:
        _SENDING.pop(id(dbapi_connection), None)


def _is_local(url: str) -> bool:
    try:
        host = make_url(url).host
    except Exception:  # create_engine below explains a malformed URL
        return False
    return host in (None, "", "localhost", "127.0.0.1", "::1")


def _engine_kwargs(url: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"future": True}
    if url.startswith(("mysql", "mariadb")):
        kwargs["connect_args"] = {
            "local_infile": True,
            "charset": "utf8mb4",
            "sql_mode": SQL_MODE,
        }
        if _is_local(url):
            # TLS to the same machine protects nothing, and PyMySQL builds a TLS
            # context for every new connection (a large share of a short job's time).
            kwargs["connect_args"]["ssl_disabled"] = True
        kwargs["pool_pre_ping"] = True
        kwargs["pool_recycle"] = 3600
    else:
        # Each worker process opens its own file handle; pooling buys nothing on SQLite.
        kwargs["poolclass"] = NullPool
        kwargs["connect_args"] = {"timeout": 60}
    return kwargs


def make_engine(settings: Settings) -> Engine:
    """An engine for DATABASE_URL that has been checked to connect."""
    url = settings.database_url
    try:
        engine = create_engine(url, **_engine_kwargs(url))
    except Exception as exc:  # a malformed URL or a missing driver
        raise ConfigError(f"DATABASE_URL {mask_url(url)} cannot be used ({exc}).") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        reason = str(exc.orig).strip() if exc.orig else str(exc)
        raise DatabaseUnavailable(
            f"Cannot connect to the database at {mask_url(url)} ({reason}); "
            "check DATABASE_URL and that the server is running."
        ) from None
    return engine


# Each MySQL engine's twin of autocommit connections (see autocommit), made on first use.
_autocommit: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()
_autocommit_made = threading.Lock()


def autocommit(engine: Engine) -> Engine:
    """An engine on engine's database whose connections run each statement in a transaction
    of its own: no statement waits for a COMMIT to be seen, nor sees an old snapshot.

    On MySQL it has a pool of its own, whose connections stay in autocommit mode:
    an isolation_level option on a connection of engine's pool cost five statements
    of its own (SET AUTOCOMMIT = 1, then, as the connection went back, ROLLBACK,
    SET AUTOCOMMIT = 0, SET SESSION TRANSACTION ISOLATION LEVEL and COMMIT). With
    skip_autocommit_rollback, a connection that goes back sends no ROLLBACK either:
    in autocommit mode there is no transaction to end. engine.dispose() disposes of
    it too.
    """
    if not is_mysql(engine):
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    with _autocommit_made:
        found = _autocommit.get(engine)
        if found is not None:
            return found
        url = engine.url.render_as_string(hide_password=False)
        twin = create_engine(
            url, **_engine_kwargs(url), isolation_level="AUTOCOMMIT", skip_autocommit_rollback=True
        )
        _autocommit[engine] = twin
        event.listen(engine, "engine_disposed", lambda _engine: twin.dispose())
        return twin


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()
