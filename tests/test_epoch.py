"""kmdb.load.epoch: the random number that tells a worker whether the ids it remembers hold."""

from __future__ import annotations

from sqlalchemy import Engine

from kmdb.load import epoch, schema
from kmdb.load.database import create_schema


def _read(engine: Engine) -> epoch.State:
    with engine.connect() as conn:
        return epoch.read(conn)


def test_making_the_tables_draws_an_epoch_and_making_them_again_keeps_it(engine: Engine) -> None:
    create_schema(engine)
    first = _read(engine)
    assert first.epoch is not None and first.generation == 0
    create_schema(engine)  # every kmdb-import does
    assert _read(engine) == first


def test_renew_draws_another_epoch_and_read_says_none_without_one(engine: Engine) -> None:
    create_schema(engine)
    first = _read(engine)
    epoch.renew(engine)
    assert _read(engine).epoch not in (None, first.epoch)
    with engine.begin() as conn:
        conn.execute(schema.database_epoch.delete())
        conn.execute(schema.people_state.insert().values(id=1, generation=7))
    assert _read(engine) == epoch.State(7, None)
    epoch.ensure(engine)
    assert _read(engine).epoch is not None
