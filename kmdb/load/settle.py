"""Settling identities in the database: aliases become people, rows point at canonical ids.

Scans record alias lines in `alias_sightings` and fold them into `aliases` (one
row per pair, earliest time); imports write rows against the canonical ids
known at the time. `settle` runs after them: it folds any sightings left over,
recomputes every person from `aliases` when it has new rows, stores each
identity's canonical id in users.canonical_id, and re-points events and
properties. The result depends only on which lines
were imported, not on the order the revisions ran in.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Connection,
    Engine,
    Insert,
    MetaData,
    String,
    Table,
    bindparam,
    cast,
    func,
    insert,
    select,
    text,
    tuple_,
    update,
)

from kmdb.errors import LockBusy
from kmdb.load import indexes, schema
from kmdb.load.bulk import bulk_insert
from kmdb.load.engine import insert_ignore, is_mysql
from kmdb.load.locks import SETTLE_LOCK, held
from kmdb.retry import retrying_lock_conflicts
from kmdb.transform.identity import canonical_key, people

log = logging.getLogger(__name__)
BATCH = 1000
# Alias pairs merged per round: bounds a settle's memory (some 50 MB) on a huge first import.
PAGE = 50_000


@dataclass(frozen=True)
class Settled:
    """What a settle changed."""

    sightings: int
    new_aliases: int
    people_changed: int
    events_moved: int
    properties_moved: int
    indexes_built: int = 0


def _last_lines(engine: Engine) -> dict[int, int]:
    """The last line of each revision in alias_sightings: what this settle merges.

    A scan commits its lines in order, so one still running only adds lines
    after these; the names interned next cover every line up to them.
    """
    s = schema.alias_sightings
    with engine.connect() as conn:
        query = select(s.c.revision, func.max(s.c.line)).group_by(s.c.revision)
        return {revision: line for revision, line in conn.execute(query)}


def _intern_names(engine: Engine, full: bool) -> None:
    """Give a users row to every name in alias_sightings (and with full, in aliases).

    An INSERT ... SELECT per column in sorted order, each in a transaction of its
    own, outside the merge's transaction: scans leave interning to this step, and
    under REPEATABLE READ the merge could not see rows that a concurrent import
    interned after it began. (One statement over the UNION of the columns took
    twice as long: MariaDB wrote the union to a temporary table first.)
    """
    a, s, u = schema.aliases, schema.alias_sightings, schema.users
    columns = [s.c.name1, s.c.name2]
    if full:  # names edited into aliases by hand may be new
        columns += [a.c.name1, a.c.name2]
    # READ COMMITTED: InnoDB then reads the sightings without locking them.
    level = "READ COMMITTED" if is_mysql(engine) else "SERIALIZABLE"
    for column in columns:
        stmt = insert_ignore(u).from_select(["name"], select(column).distinct().order_by(column))

        def run(stmt: Insert = stmt) -> None:
            with engine.connect().execution_options(isolation_level=level) as conn:
                conn.execute(stmt)
                conn.commit()

        retrying_lock_conflicts(run)


def _merge_sightings(
    conn: Connection, last_line: dict[int, int], tmp_dir: str | None
) -> tuple[int, int]:
    """Fold the sightings up to last_line into aliases, then delete them."""
    s, a = schema.alias_sightings, schema.aliases
    if not last_line:
        return 0, 0
    next_id = (conn.execute(select(func.max(a.c.id))).scalar() or 0) + 1
    # A first import has no aliases to compare with (until its first page is in).
    some_aliases = next_id > 1
    # Sightings a page at a time (in key order), so that memory stays bounded however
    # many aliases come in; a pair seen again on a later page meets its own new row.
    page_query = (
        select(s.c.revision, s.c.line, s.c.name1, s.c.name2, _as_text(s.c.t))
        .order_by(s.c.revision, s.c.line)
        .limit(PAGE)
    )
    sightings = new_aliases = 0
    after = (-1, -1)
    while page := conn.execute(
        page_query.where(tuple_(s.c.revision, s.c.line) > tuple_(*after))
    ).all():
        after = (page[-1][0], page[-1][1])
        earliest: dict[tuple[str, str], Any] = {}
        for revision, line, name1, name2, t in page:
            if line > last_line.get(revision, -1):
                continue  # committed after this settle began: the next one merges it
            sightings += 1
            pair = (name1, name2)
            if pair not in earliest or t < earliest[pair]:
                earliest[pair] = t
        del page
        existing = _existing_aliases(conn, earliest) if some_aliases else {}
        new_rows = [
            (next_id + i, pair[0], pair[1], str(earliest[pair]))
            for i, pair in enumerate(p for p in earliest if p not in existing)
        ]
        next_id += len(new_rows)
        new_aliases += len(new_rows)
        some_aliases = some_aliases or bool(new_rows)
        bulk_insert(conn, a, ("id", "name1", "name2", "t"), new_rows, tmp_dir)
        earlier = [
            {"alias_id": id_, "new_t": earliest[pair]}
            for pair, (id_, t) in existing.items()
            if earliest[pair] < t
        ]
        if earlier:
            conn.execute(
                update(a)
                .where(a.c.id == bindparam("alias_id"))
                .values(t=bindparam("new_t", type_=String)),
                earlier,
            )
    conn.execute(
        s.delete().where(s.c.revision == bindparam("r"), s.c.line <= bindparam("l")),
        [{"r": r, "l": line} for r, line in sorted(last_line.items())],
    )
    return sightings, new_aliases


def _as_text(t: ColumnElement[dt.datetime]) -> ColumnElement[str]:
    """A time column as its 'YYYY-MM-DD HH:MM:SS' text, which sorts as the times do:
    building a datetime for each of a settle's sightings cost more than reading them."""
    return cast(t, String)


def _existing_aliases(
    conn: Connection, pairs: dict[tuple[str, str], Any]
) -> dict[tuple[str, str], tuple[int, Any]]:
    """(id, t) of the aliases already stored for some of pairs (the earliest row of each)."""
    a = schema.aliases
    existing: dict[tuple[str, str], tuple[int, Any]] = {}
    names1 = sorted({p[0] for p in pairs})
    query = select(a.c.id, a.c.name1, a.c.name2, _as_text(a.c.t)).where(
        a.c.name1.in_(bindparam("names", expanding=True))
    )
    for start in range(0, len(names1), BATCH):
        # Positional: Row.t is SQLAlchemy's own attribute, not the column t.
        for id_, name1, name2, t in conn.execute(query, {"names": names1[start : start + BATCH]}):
            pair = (name1, name2)
            if pair in pairs and (pair not in existing or t < existing[pair][1]):
                existing[pair] = (id_, t)
    return existing


# Where _set_canonical stages its changes on MySQL (a temporary table, one per connection).
_CHANGES = Table(
    "kmdb_canonical_changes",
    MetaData(),
    Column("id", BigInteger, primary_key=True),
    Column("canonical_id", BigInteger),
)


def _set_canonical(
    conn: Connection, changes: list[tuple[int, int | None]], tmp_dir: str | None
) -> None:
    """Write users.canonical_id for many users, (user id, canonical id or None) each."""
    if not changes:
        return
    if is_mysql(conn.engine):
        # A bulk load and one joined UPDATE: statements per row spent most of a
        # settle escaping their parameters.
        conn.exec_driver_sql(
            "CREATE TEMPORARY TABLE kmdb_canonical_changes "
            "(id BIGINT PRIMARY KEY, canonical_id BIGINT NULL)"
        )
        try:
            bulk_insert(conn, _CHANGES, ("id", "canonical_id"), changes, tmp_dir)
            conn.exec_driver_sql(
                "UPDATE users u JOIN kmdb_canonical_changes c ON u.id = c.id "
                "SET u.canonical_id = c.canonical_id"
            )
        finally:
            conn.exec_driver_sql("DROP TEMPORARY TABLE kmdb_canonical_changes")
        return
    u = schema.users
    stmt = update(u).where(u.c.id == bindparam("uid")).values(canonical_id=bindparam("cid"))
    for start in range(0, len(changes), BATCH * 10):
        conn.execute(stmt, [{"uid": i, "cid": c} for i, c in changes[start : start + BATCH * 10]])


def _repoint(conn: Connection, full: bool) -> tuple[int, int]:
    moved = []
    for table in ("events", "properties"):
        if conn.execute(text(f"SELECT 1 FROM {table} LIMIT 1")).first() is None:
            moved.append(0)  # nothing to move (before a first import's rows)
            continue
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


def _people_changes(conn: Connection) -> list[tuple[int, int | None]]:
    """The users whose canonical_id must change, as (user id, new canonical id or None).

    People are computed from the whole aliases table, as a union-find over user
    ids with rows streamed from the database: a first import can bring millions.
    """
    a, u = schema.aliases, schema.users
    u1, u2 = u.alias("u1"), u.alias("u2")
    query = select(u1.c.id, u2.c.id, a.c.name1, a.c.name2).select_from(
        a.join(u1, u1.c.name == a.c.name1).join(u2, u2.c.name == a.c.name2)
    )
    name_of: dict[int, str] = {}

    def pairs() -> Iterator[tuple[int, int]]:
        for id1, id2, name1, name2 in conn.execution_options(yield_per=PAGE).execute(query):
            name_of[id1], name_of[id2] = name1, name2
            yield id1, id2

    canonical = people(pairs(), key=lambda i: canonical_key(name_of[i]))
    name_of.clear()  # the names were only needed to choose canonical identities
    changes: list[tuple[int, int | None]] = []
    current = select(u.c.id, u.c.canonical_id).where(u.c.canonical_id.is_not(None))
    for uid, now in conn.execution_options(yield_per=PAGE).execute(current):
        wanted = canonical.pop(uid, uid)
        target = None if wanted == uid else wanted
        if now != target:
            changes.append((uid, target))
    # Those left had no canonical id yet.
    changes.extend((uid, root) for uid, root in canonical.items() if root != uid)
    return changes


def _aliases_marks(conn: Connection) -> tuple[int, int | None]:
    """The largest aliases.id, and the largest one that people account for (None: never settled)."""
    a, st = schema.aliases, schema.settle_state
    newest = conn.execute(select(func.max(a.c.id))).scalar() or 0
    return newest, conn.execute(select(st.c.aliases_upto).where(st.c.id == 1)).scalar()


def _mark_settled(conn: Connection, upto: int) -> None:
    st = schema.settle_state
    if conn.execute(update(st).where(st.c.id == 1).values(aliases_upto=upto)).rowcount == 0:
        conn.execute(insert(st).values(id=1, aliases_upto=upto))


def _merge(engine: Engine, tmp_dir: str | None) -> tuple[int, int]:
    last_line = _last_lines(engine)
    if not last_line:
        return 0, 0
    # In a transaction of its own, so it goes first (SQLite would otherwise wait on itself).
    _intern_names(engine, full=False)
    with engine.begin() as conn:
        return _merge_sightings(conn, last_line, tmp_dir)


def merge_sightings(
    engine: Engine, tmp_dir: str | None = None, at_least: int = 0
) -> tuple[int, int]:
    """Fold the alias sightings recorded so far into aliases; return (sightings, new aliases).

    Each scan calls it once its own lines are in, so that this work is spread
    over the scans, which run side by side, instead of waiting for the settle.
    A scan does not wait for another one's merge: that merge, a later one or the
    settle step takes its sightings too. With fewer than at_least sightings
    waiting it leaves them to a later merge.
    """
    if at_least:
        with engine.connect() as conn:
            waiting = conn.execute(select(func.count()).select_from(schema.alias_sightings))
            if waiting.scalar_one() < at_least:
                return 0, 0
    try:
        with held(engine, SETTLE_LOCK, wait=0):
            return _merge(engine, tmp_dir)
    except LockBusy:
        return 0, 0


def settle(
    engine: Engine, full: bool = False, tmp_dir: str | None = None, before_import: bool = False
) -> Settled:
    """Fold new alias sightings into aliases, recompute people and re-point rows.

    People are recomputed when aliases has rows that the last settle did not
    account for. With full=True they always are, and every row is re-pointed
    from the identity it named, as needed after aliases were edited or removed
    by hand; otherwise only rows that point at an identity that is no longer
    canonical move.

    Indexes put off by a first import are built first; before_import (the settle
    between the scans and the import) leaves them put off while the tables are empty.
    """
    with held(engine, SETTLE_LOCK):
        built = indexes.build(engine, only_with_rows=before_import)
        sightings, new_aliases = _merge(engine, tmp_dir)
        if full:
            _intern_names(engine, full=True)
        with engine.begin() as conn:
            # One transaction: a settle that dies leaves people stale for the next one.
            changes: list[tuple[int, int | None]] = []
            newest, upto = _aliases_marks(conn)
            # Without new aliases people are as the last settle left them (kmdb-realias
            # is the tool for aliases edited by hand); only rows may need moving.
            if full or upto is None or newest > upto:
                changes = _people_changes(conn)
                _set_canonical(conn, changes, tmp_dir)
                _mark_settled(conn, newest)
            events_moved, properties_moved = _repoint(conn, full)
    result = Settled(
        sightings, new_aliases, len(changes), events_moved, properties_moved, len(built)
    )
    log.info("Settled identities: %s", result)
    return result
