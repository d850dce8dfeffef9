"""The database's epoch: what tells a worker that the ids it remembers still hold.

Interned ids (`keys`, `users` and their canonical ids) are worth keeping from one
job to the next: a job of a few hundred lines would otherwise spend more time
looking its names up than importing them. They stop holding when a flush empties
the tables (ids start again from 1) or a settle changes people. The first draws a
new random epoch, the second moves people_state.generation on: a worker reads
both as a job starts, and forgets what it remembers when either moved.
"""

from __future__ import annotations

import secrets
from typing import NamedTuple

from sqlalchemy import Connection, Engine, delete, insert, select

from kmdb.load import schema
from kmdb.load.engine import insert_ignore


class State(NamedTuple):
    """people_state.generation (0 before any settle changed people) and the epoch (None
    where no epoch was drawn: a database made by other means; nothing is kept then)."""

    generation: int
    epoch: int | None


def _draw() -> int:
    return secrets.randbits(62)


def ensure(engine: Engine) -> None:
    """Draw an epoch where the database has none (its tables were just made)."""
    with engine.begin() as conn:
        conn.execute(insert_ignore(schema.database_epoch), [{"id": 1, "epoch": _draw()}])


def renew(engine: Engine) -> None:
    """Draw a new epoch: the tables were emptied, and every id remembered is void."""
    e = schema.database_epoch
    with engine.begin() as conn:
        conn.execute(delete(e))
        conn.execute(insert(e).values(id=1, epoch=_draw()))


def read(conn: Connection) -> State:
    """The generation and the epoch, in one round trip."""
    ps, e = schema.people_state, schema.database_epoch
    generation = select(ps.c.generation).where(ps.c.id == 1).scalar_subquery()
    epoch = select(e.c.epoch).where(e.c.id == 1).scalar_subquery()
    row = conn.execute(select(generation, epoch)).one()
    return State(row[0] or 0, row[1])
