"""kmdb.load.interning: names to ids, in bulk, whoever else interns the same names meanwhile."""

from __future__ import annotations

import threading

from sqlalchemy import Engine, insert, select

from kmdb.load import schema
from kmdb.load.database import create_schema
from kmdb.load.interning import Interner


def test_concurrent_interning_agrees(engine: Engine) -> None:
    create_schema(engine)
    names = [f"user-{i}" for i in range(3_000)]
    results: list[dict] = []
    errors: list[BaseException] = []

    def intern(part: list[str]) -> None:
        try:
            results.append(dict(Interner(engine, schema.users, "name").ids(part)))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    # Overlapping halves, the way two workers meet the same people.
    threads = [
        threading.Thread(target=intern, args=(names[i * 500 : i * 500 + 2_000],)) for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with engine.connect() as conn:
        stored = dict(conn.execute(select(schema.users.c.name, schema.users.c.id)).all())
    assert len(stored) == 3_000
    for found in results:
        assert all(stored[name] == id_ for name, id_ in found.items())


def test_interning_sees_names_others_interned_since_and_commits_its_own_at_once(
    engine: Engine,
) -> None:
    """The connections interning reuses keep no snapshot and no open transaction between uses."""
    create_schema(engine)
    users = Interner(engine, schema.users, "name")
    users.ids(["ann"])  # its connection goes back to its pool, to be used again below
    # Another worker interns bob meanwhile: a connection that kept the snapshot of the
    # lookup above would not see him, and the name could not be interned.
    with engine.begin() as conn:
        conn.execute(insert(schema.users).values(name="bob"))
        bob = conn.execute(select(schema.users.c.id).where(schema.users.c.name == "bob")).scalar()
    assert users.ids(["bob"])["bob"] == bob
    # What it inserts others see at once, without waiting for a COMMIT to come.
    carol = users.ids(["carol"])["carol"]
    with engine.connect() as conn:
        found = conn.execute(select(schema.users.c.id).where(schema.users.c.name == "carol"))
        assert found.scalar() == carol
