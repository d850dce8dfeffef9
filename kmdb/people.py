"""Settling identities in the database: aliases become people, rows point at canonical ids.

Revision imports record alias lines in `alias_sightings` and write rows against
the canonical ids known at the time. `settle` runs after them: it folds the
sightings into `aliases` (one row per pair, earliest time), recomputes every
person from `aliases`, stores each identity's canonical id in users.canonical_id,
and re-points events and properties. The result depends only on which lines
were imported, not on the order the revisions ran in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    MetaData,
    Table,
    bindparam,
    func,
    select,
    text,
    union,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from kmdb import schema
from kmdb.db import is_mysql
from kmdb.identity import people
from kmdb.load import Interner, bulk_insert
from kmdb.locks import held

log = logging.getLogger(__name__)
BATCH = 1000
SETTLE_LOCK = "settle"


@dataclass(frozen=True)
class Settled:
    """What a settle changed."""

    sightings: int
    new_aliases: int
    people_changed: int
    events_moved: int
    properties_moved: int


def _merge_sightings(conn: Connection, tmp_dir: str | None) -> tuple[int, int]:
    s, a = schema.alias_sightings, schema.aliases
    # One snapshot (one transaction) for both reads: every sighting up to each
    # revision's last line read here is merged, then deleted. A scan commits its
    # lines in order, so one still running only adds lines after that one.
    last_line = dict(
        conn.execute(select(s.c.revision, func.max(s.c.line)).group_by(s.c.revision)).all()
    )
    if not last_line:
        return 0, 0
    sightings = conn.execute(select(func.count()).select_from(s)).scalar() or 0
    earliest: dict[tuple[str, str], object] = {
        (name1, name2): t
        for name1, name2, t in conn.execute(
            select(s.c.name1, s.c.name2, func.min(s.c.t)).group_by(s.c.name1, s.c.name2)
        )
    }
    existing: dict[tuple[str, str], tuple[int, object]] = {}
    names1 = sorted({p[0] for p in earliest})
    query = select(a.c.id, a.c.name1, a.c.name2, a.c.t).where(
        a.c.name1.in_(bindparam("names", expanding=True))
    )
    for start in range(0, len(names1), BATCH):
        # Positional: Row.t is SQLAlchemy's own attribute, not the column t.
        for id_, name1, name2, t in conn.execute(query, {"names": names1[start : start + BATCH]}):
            pair = (name1, name2)
            if pair in earliest and (pair not in existing or t < existing[pair][1]):
                existing[pair] = (id_, t)
    next_id = (conn.execute(select(func.max(a.c.id))).scalar() or 0) + 1
    new_rows = [
        (next_id + i, pair[0], pair[1], str(earliest[pair]))
        for i, pair in enumerate(sorted(p for p in earliest if p not in existing))
    ]
    bulk_insert(conn, a, ("id", "name1", "name2", "t"), new_rows, tmp_dir)
    earlier = [
        {"alias_id": id_, "new_t": earliest[pair]}
        for pair, (id_, t) in existing.items()
        if earliest[pair] < t  # type: ignore[operator]
    ]
    if earlier:
        conn.execute(
            update(a).where(a.c.id == bindparam("alias_id")).values(t=bindparam("new_t")), earlier
        )
    conn.execute(
        s.delete().where(s.c.revision == bindparam("r"), s.c.line <= bindparam("l")),
        [{"r": r, "l": line} for r, line in sorted(last_line.items())],
    )
    return sightings, len(new_rows)


# Where _set_canonical stages its changes on MySQL (a temporary table, one per connection).
_CHANGES = Table(
    "kmdb_canonical_changes",
    MetaData(),
    Column("id", BigInteger, primary_key=True),
    Column("canonical_id", BigInteger),
)


def _set_canonical(conn: Connection, changes: list[dict], tmp_dir: str | None) -> None:
    """Write users.canonical_id for many users in few statements."""
    if not changes:
        return
    u = schema.users
    if is_mysql(conn.engine):
        # A bulk load and one joined UPDATE: an upsert of many rows spent most of a
        # settle escaping its parameters.
        conn.exec_driver_sql(
            "CREATE TEMPORARY TABLE kmdb_canonical_changes "
            "(id BIGINT PRIMARY KEY, canonical_id BIGINT NULL)"
        )
        try:
            rows = [(c["uid"], c["cid"]) for c in changes]
            bulk_insert(conn, _CHANGES, ("id", "canonical_id"), rows, tmp_dir)
            conn.exec_driver_sql(
                "UPDATE users u JOIN kmdb_canonical_changes c ON u.id = c.id "
                "SET u.canonical_id = c.canonical_id"
            )
        finally:
            conn.exec_driver_sql("DROP TEMPORARY TABLE kmdb_canonical_changes")
        return
    stmt = sqlite_insert(u)
    stmt = stmt.on_conflict_do_update(
        index_elements=[u.c.id], set_={"canonical_id": stmt.excluded.canonical_id}
    )
    rows = [{"id": c["uid"], "name": c["name"], "canonical_id": c["cid"]} for c in changes]
    for start in range(0, len(rows), BATCH * 10):
        conn.execute(stmt, rows[start : start + BATCH * 10])


def _repoint(conn: Connection, full: bool) -> tuple[int, int]:
    moved = []
    for table in ("events", "properties"):
        if is_mysql(conn.engine):
            if full:
                sql = (
                    f"UPDATE `{table}` r JOIN users u ON r.identity_id = u.id "
                    "SET r.user_id = COALESCE(u.canonical_id, u.id) "
                    "WHERE r.user_id <> COALESCE(u.canonical_id, u.id)"
                )
            else:
                # Rows only ever point at an identity of their own person, so one hop
                # from a non-canonical identity to its canonical one is enough. Users
                # first (STRAIGHT_JOIN): left to itself the optimizer scans every row.
                sql = (
                    f"UPDATE users u STRAIGHT_JOIN `{table}` r ON r.user_id = u.id "
                    "SET r.user_id = u.canonical_id WHERE u.canonical_id IS NOT NULL"
                )
        elif full:
            person = f"(SELECT COALESCE(canonical_id, id) FROM users WHERE users.id = {table}.identity_id)"
            sql = f"UPDATE {table} SET user_id = {person} WHERE user_id <> {person}"
        else:
            sql = (
                f"UPDATE {table} SET user_id = "
                f"(SELECT canonical_id FROM users WHERE users.id = {table}.user_id) "
                "WHERE user_id IN (SELECT id FROM users WHERE canonical_id IS NOT NULL)"
            )
        moved.append(conn.execute(text(sql)).rowcount)
    return moved[0], moved[1]


def _names_without_user(engine: Engine) -> list[str]:
    """Names in aliases or sightings that have no users row (usually none: scans intern them)."""
    a, s, u = schema.aliases, schema.alias_sightings, schema.users
    names = union(
        select(a.c.name1.label("n")),
        select(a.c.name2),
        select(s.c.name1),
        select(s.c.name2),
    ).subquery()
    query = (
        select(names.c.n)
        .select_from(names.outerjoin(u, u.c.name == names.c.n))
        .where(u.c.id.is_(None))
    )
    with engine.connect() as conn:
        return list(conn.execute(query).scalars())


def _people_changes(conn: Connection) -> list[dict]:
    """The users whose canonical_id must change, as {uid, cid, name}, from all of aliases."""
    a, u = schema.aliases, schema.users
    u1, u2 = u.alias("u1"), u.alias("u2")
    ids: dict[str, int] = {}
    pairs = []
    query = select(a.c.name1, a.c.name2, u1.c.id, u2.c.id).select_from(
        a.join(u1, u1.c.name == a.c.name1).join(u2, u2.c.name == a.c.name2)
    )
    for name1, name2, id1, id2 in conn.execute(query):
        ids[name1], ids[name2] = id1, id2
        pairs.append((name1, name2))
    canonical = people(pairs)
    wanted = {ids[name]: ids[c] for name, c in canonical.items() if name != c}
    current = dict(
        conn.execute(select(u.c.id, u.c.canonical_id).where(u.c.canonical_id.is_not(None))).all()
    )
    names = {i: name for name, i in ids.items()}
    changes = [{"uid": i, "cid": c} for i, c in wanted.items() if current.get(i) != c]
    gone = [i for i in current if i not in wanted]
    for start in range(0, len(gone), BATCH):
        part = gone[start : start + BATCH]
        names.update(conn.execute(select(u.c.id, u.c.name).where(u.c.id.in_(part))).all())
    changes += [{"uid": i, "cid": None} for i in gone]
    for change in changes:
        change["name"] = names[change["uid"]]
    return changes


def settle(engine: Engine, full: bool = False, tmp_dir: str | None = None) -> Settled:
    """Fold new alias sightings into aliases, recompute people and re-point rows.

    With full=True every row is re-pointed from the identity it named, as needed
    after aliases were edited or removed by hand; otherwise only rows that point
    at an identity that is no longer canonical move.
    """
    with held(engine, SETTLE_LOCK):
        if full:
            # Names edited into aliases by hand may be new (scans intern the names they
            # record). Interning writes in transactions of its own, so it goes first
            # (SQLite would otherwise wait on itself).
            Interner(engine, schema.users, "name").ids(_names_without_user(engine))
        with engine.begin() as conn:
            # One transaction: a settle that dies leaves its sightings for the next one.
            sightings, new_aliases = _merge_sightings(conn, tmp_dir)
            changes: list[dict] = []
            # Without new aliases people are as the last settle left them (kmdb-realias
            # is the tool for aliases edited by hand); only rows may need moving.
            if sightings or full:
                changes = _people_changes(conn)
                _set_canonical(conn, changes, tmp_dir)
            events_moved, properties_moved = _repoint(conn, full)
    result = Settled(sightings, new_aliases, len(changes), events_moved, properties_moved)
    log.info("Settled identities: %s", result)
    return result
