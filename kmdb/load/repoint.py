"""Re-pointing older rows at their people's new canonical ids.

A settle that changes people writes users.canonical_id and logs the users it
changed in people_changes; the events and properties stored before then against
their old canonical ids must move. A settle after an import moves them in its own
transaction. The settle before an import only marks them pending (repoint_state):
the import's own rows need none of it, since its jobs read the new canonical ids,
and the older rows move in a job of their own (`repoint_pending`) that runs
beside the import's jobs instead of holding them back. Any later settle moves
what is still pending, so a re-point job that failed or died loses nothing.

Why a re-point job may run beside imports without the settle's locks: an import
job that commits after the settle either read the new canonical ids, or reads, as
it commits, the generation the settle moved on and re-points its own rows then
(kmdb.pipeline.steps); every row committed before the settle's commit is there
to see when this job starts, after it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    MetaData,
    Select,
    Table,
    delete,
    select,
)

from kmdb.load import indexes, schema
from kmdb.load.engine import insert_ignore, is_mysql
from kmdb.load.locks import SETTLE_LOCK, held
from kmdb.retry import retrying_lock_conflicts

# Where a settle stages the users to re-point (a temporary table, one per connection).
STAGED = Table(
    "kmdb_canonical_changes",
    MetaData(),
    Column("id", BigInteger, primary_key=True),
    Column("canonical_id", BigInteger),
)


@contextlib.contextmanager
def staging(conn: Connection) -> Iterator[None]:
    """The temporary table kmdb_canonical_changes (user id, new canonical id or NULL)."""
    temporary = "TEMPORARY " if is_mysql(conn.engine) else "TEMP "
    drop = "DROP TEMPORARY TABLE" if is_mysql(conn.engine) else "DROP TABLE"
    conn.exec_driver_sql(f"{drop} IF EXISTS kmdb_canonical_changes")
    conn.exec_driver_sql(
        f"CREATE {temporary}TABLE kmdb_canonical_changes "
        "(id BIGINT PRIMARY KEY, canonical_id BIGINT NULL)"
    )
    try:
        yield
    finally:
        conn.exec_driver_sql(f"{drop} kmdb_canonical_changes")


def pending_since(conn: Connection) -> int | None:
    """The generation after which changed users' rows are still to re-point; None: none are."""
    rs = schema.repoint_state
    return conn.execute(select(rs.c.since).where(rs.c.id == 1)).scalar()


def defer(conn: Connection, generation: int) -> None:
    """Leave the rows of users changed after generation to a re-point job (or the next settle).

    What was pending already stays pending: the earliest generation is kept.
    """
    conn.execute(insert_ignore(schema.repoint_state), [{"id": 1, "since": generation}])


def stage_pending(conn: Connection, since: int) -> None:
    """Stage the users changed after generation since, with their canonical ids as they are now.

    Users staged already (a settle's own changes) keep their row.
    """
    u = schema.users
    current = select(u.c.id, u.c.canonical_id).where(u.c.id.in_(changed_since(since)))
    conn.execute(insert_ignore(STAGED).from_select(["id", "canonical_id"], current))


def changed_since(since: int) -> Select[tuple[int]]:
    """The users that settles changed after generation since (by people_changes_generation)."""
    pc = schema.people_changes
    return select(pc.c.user_id).where(pc.c.generation > since).distinct()


def done(conn: Connection) -> None:
    """Nothing is pending any more (in the caller's transaction)."""
    conn.execute(delete(schema.repoint_state))


def staged_rows(conn: Connection) -> list[int]:
    """Re-point the rows of the staged users that have a new canonical id; (events, properties) moved.

    Aliases only ever merge people, so a row points at its person's old canonical
    identity, which is staged whenever the person's canonical identity moved. Rows go
    through user_id's index, which the UPDATE reads with locks on MySQL (see the callers).
    """
    lacking = indexes.missing(conn)
    moved = []
    for table in ("events", "properties"):
        if not is_mysql(conn.engine):
            sql = (
                f"UPDATE {table} SET user_id = (SELECT c.canonical_id FROM kmdb_canonical_changes c "
                f"WHERE c.id = {table}.user_id) WHERE user_id IN "
                "(SELECT id FROM kmdb_canonical_changes WHERE canonical_id IS NOT NULL)"
            )
        elif table in lacking:
            # No index by user (put off while a first import's tables are empty): one
            # scan of the table, not one per user.
            sql = (
                f"UPDATE `{table}` r JOIN kmdb_canonical_changes c ON r.user_id = c.id "
                "SET r.user_id = c.canonical_id WHERE c.canonical_id IS NOT NULL"
            )
        else:
            # The changes first (STRAIGHT_JOIN): left to itself the optimizer may scan every row.
            sql = (
                f"UPDATE kmdb_canonical_changes c STRAIGHT_JOIN `{table}` r ON r.user_id = c.id "
                "SET r.user_id = c.canonical_id WHERE c.canonical_id IS NOT NULL"
            )
        moved.append(conn.exec_driver_sql(sql).rowcount)
    return moved


def repoint_pending(engine: Engine) -> tuple[int, int]:
    """Re-point the rows left pending by settles before imports; (events, properties) moved.

    Holds the settle lock, so that no settle changes people meanwhile. On MySQL it
    reads at READ COMMITTED, which takes no gap locks: the imports running beside it
    insert rows by the same users' index without waiting for it (see the module's
    docstring for why none of their rows can need it).
    """
    level = "READ COMMITTED" if is_mysql(engine) else "SERIALIZABLE"

    def run() -> tuple[int, int]:
        with engine.connect().execution_options(isolation_level=level) as conn:
            since = pending_since(conn)
            if since is None:
                return 0, 0
            events = properties = 0
            # Empty tables (a first import's): the settle committed before this began
            # and no row was there, so every row comes after it, and needs none of this.
            if indexes.has_rows(conn):
                with staging(conn):
                    stage_pending(conn, since)
                    events, properties = staged_rows(conn)
            done(conn)
            conn.commit()
            return events, properties

    with held(engine, SETTLE_LOCK):
        return retrying_lock_conflicts(run)
