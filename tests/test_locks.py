"""Named locks on MariaDB: taken together, in order, and freed together."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine

from kmdb.errors import LockBusy
from kmdb.load.locks import LockSet, is_held

pytestmark = pytest.mark.mysql


@pytest.fixture
def mysql_engine(mysql_url: str) -> Iterator[Engine]:
    engine = create_engine(mysql_url)
    yield engine
    engine.dispose()


def test_take_all_holds_every_lock_until_close(mysql_engine: Engine) -> None:
    names = [f"revision:{n}" for n in (1, 2, 3)]
    with LockSet(mysql_engine) as locks:
        locks.take_all(names)
        assert [is_held(mysql_engine, name) for name in names] == [True, True, True]
    assert [is_held(mysql_engine, name) for name in names] == [False, False, False]


def test_take_all_keeps_only_the_locks_before_a_busy_one_while_it_waits(
    mysql_engine: Engine,
) -> None:
    other = LockSet(mysql_engine)
    other.take("revision:2")
    try:
        locks = LockSet(mysql_engine)
        with pytest.raises(LockBusy, match="another worker holds it"):
            locks.take_all(["revision:1", "revision:2", "revision:3"], wait=0.2)
        # Taken in order: revision 3 was free, but is not kept while 2 is waited for.
        assert is_held(mysql_engine, "revision:1") is True
        assert is_held(mysql_engine, "revision:3") is False
        locks.close()
        assert is_held(mysql_engine, "revision:1") is False
    finally:
        other.close()
    assert is_held(mysql_engine, "revision:2") is False


def test_a_lock_taken_twice_is_freed_by_one_close(mysql_engine: Engine) -> None:
    with LockSet(mysql_engine) as locks:
        locks.take("revision:9:part:0")
        locks.take_all(["revision:9:part:0", "revision:9:part:1"])
    assert is_held(mysql_engine, "revision:9:part:0") is False
    assert is_held(mysql_engine, "revision:9:part:1") is False


def test_locks_stay_distinct_with_a_64_character_database_name(mysql_url: str) -> None:
    from sqlalchemy.engine import make_url

    from tests.helpers import mysql_admin

    name = "kmdb_long_" + "x" * 54
    assert len(name) == 64
    admin = mysql_admin()
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{name}`")
    engine = create_engine(make_url(mysql_url).set(database=name))
    try:
        with LockSet(engine) as locks:
            locks.take("plan")
            # Cut to 64 characters, every name was "kmdb:<database>": all one lock.
            assert is_held(engine, "plan") is True
            assert is_held(engine, "revision:1") is False
            assert is_held(engine, "revision:1:part:0" + "9" * 60) is False
            other = LockSet(engine)
            other.take("revision:1", wait=0)
            other.close()
    finally:
        engine.dispose()
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()
