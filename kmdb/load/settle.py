"""Settling identities in the database: aliases become people, rows point at canonical ids.

Scans record alias lines in `alias_sightings` and fold them into `aliases` (one
row per pair, earliest time); imports write rows against the canonical ids
known at the time. `settle` runs after them: it folds any sightings left over,
recomputes the people that aliases new since the last settle touch, stores each
identity's canonical id in users.canonical_id, and re-points the events and
properties of the identities whose canonical id changed (before an import, a job
beside the import does: kmdb.load.repoint), so that its cost follows what changed.
An import that read canonical ids before a settle changed them re-points its own
rows as it commits (people_state, people_changes). The result depends only on
which lines were imported, not on the order the revisions ran in.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Insert,
    String,
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
from kmdb.load import epoch, indexes, repoint, schema
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


def _apply(
    conn: Connection,
    changes: list[tuple[int, int | None]],
    full: bool,
    tmp_dir: str | None,
    defer: bool = False,
) -> tuple[int, int]:
    """Write users.canonical_id for many users, (user id, canonical id or None) each, log
    them under the next generation and re-point rows; return (events, properties) moved.

    Without full, only rows whose user_id is a user that got a new canonical id move
    (kmdb.load.repoint), with those of earlier settles' changes still pending; with
    defer (the settle before an import) they are left pending for a re-point job. With
    full (people may have split), every row is re-pointed from the identity it named.
    The changes are staged in a temporary table, then applied by joined statements:
    statements per row spent most of a settle escaping their parameters.
    """
    since = repoint.pending_since(conn)
    moved = [0, 0]
    repointing = not full and not defer and since is not None
    if changes or repointing:
        with repoint.staging(conn):
            if changes:
                generation = epoch.read(conn).generation
                bulk_insert(conn, repoint.STAGED, ("id", "canonical_id"), changes, tmp_dir)
                _write_canonical_ids(conn)
                conn.exec_driver_sql(
                    "INSERT INTO people_changes (user_id, generation) "
                    f"SELECT id, {int(generation) + 1} FROM kmdb_canonical_changes"
                )
                if defer:
                    repoint.defer(conn, generation)
            if not full and not defer:
                if since is not None:
                    repoint.stage_pending(conn, since)
                moved = repoint.staged_rows(conn)
    if full:
        moved = _repoint_all(conn)
    if not defer and since is not None:
        repoint.done(conn)
    return moved[0], moved[1]


def _write_canonical_ids(conn: Connection) -> None:
    """users.canonical_id from the staged changes."""
    if is_mysql(conn.engine):
        conn.exec_driver_sql(
            "UPDATE users u JOIN kmdb_canonical_changes c ON u.id = c.id "
            "SET u.canonical_id = c.canonical_id"
        )
    else:
        conn.exec_driver_sql(
            "UPDATE users SET canonical_id = (SELECT c.canonical_id FROM "
            "kmdb_canonical_changes c WHERE c.id = users.id) "
            "WHERE id IN (SELECT id FROM kmdb_canonical_changes)"
        )


def _repoint_all(conn: Connection) -> list[int]:
    """Re-point every row whose user_id is not its identity's person (kmdb-realias)."""
    moved = []
    for table in ("events", "properties"):
        if is_mysql(conn.engine):
            sql = (
                f"UPDATE `{table}` r JOIN users u ON r.identity_id = u.id "
                "SET r.user_id = COALESCE(u.canonical_id, u.id) "
                "WHERE r.user_id <> COALESCE(u.canonical_id, u.id)"
            )
        else:
            person = f"(SELECT COALESCE(canonical_id, id) FROM users WHERE users.id = {table}.identity_id)"
            sql = f"UPDATE {table} SET user_id = {person} WHERE user_id <> {person}"
        moved.append(conn.execute(text(sql)).rowcount)
    return moved


def _next_generation(conn: Connection) -> None:
    """Move people_state.generation on: the last statement of a settle that changed people."""
    ps = schema.people_state
    bump = update(ps).where(ps.c.id == 1).values(generation=ps.c.generation + 1)
    if conn.execute(bump).rowcount == 0:
        conn.execute(insert(ps).values(id=1, generation=1))


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


def _touched_people_changes(conn: Connection, upto: int) -> list[tuple[int, int | None]]:
    """The users whose canonical_id must change for the aliases beyond upto (as _people_changes).

    Aliases only ever merge people. The identities that new aliases name (T) belong
    to people whose canonical identities (R) are read from users; those people's
    members are R and the users whose canonical_id is in R (users_canonical's index).
    A union-find over each member's link to its canonical identity, and the new
    aliases, gives the people they make; no other person changes. Memory follows
    the people touched, not the whole table.
    """
    a, u = schema.aliases, schema.users
    u1, u2 = u.alias("u1"), u.alias("u2")
    query = (
        select(u1.c.id, u2.c.id, a.c.name1, a.c.name2)
        .select_from(a.join(u1, u1.c.name == a.c.name1).join(u2, u2.c.name == a.c.name2))
        .where(a.c.id > upto)
    )
    name_of: dict[int, str] = {}
    now: dict[int, int | None] = {}  # the canonical_id of every user read

    def new_pairs() -> Iterator[tuple[int, int]]:
        for id1, id2, name1, name2 in conn.execution_options(yield_per=PAGE).execute(query):
            name_of[id1], name_of[id2] = name1, name2
            yield id1, id2

    def links() -> Iterator[tuple[int, int]]:
        # Runs once new_pairs is done: name_of then holds the identities touched.
        roots: set[int] = set()
        for ids in _batches(sorted(name_of)):
            for uid, cid in conn.execute(select(u.c.id, u.c.canonical_id).where(u.c.id.in_(ids))):
                now[uid] = cid
                roots.add(uid if cid is None else cid)
        for ids in _batches(sorted(roots)):
            for column in (u.c.id, u.c.canonical_id):
                members = select(u.c.id, u.c.name, u.c.canonical_id).where(column.in_(ids))
                for uid, name, cid in conn.execute(members):
                    name_of[uid], now[uid] = name, cid
                    if cid is not None:
                        yield uid, cid

    canonical = people(chain(new_pairs(), links()), key=lambda i: canonical_key(name_of[i]))
    changes: list[tuple[int, int | None]] = []
    for uid, root in canonical.items():
        target = None if root == uid else root
        if now[uid] != target:
            changes.append((uid, target))
    return sorted(changes)


def _batches(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), BATCH):
        yield ids[start : start + BATCH]


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

    The people that aliases beyond the last settle's touch are recomputed, and only
    rows of identities whose canonical id changed move: a settle with nothing new
    writes nothing. With full=True (kmdb-realias) every person is recomputed from
    the whole aliases table and every row re-pointed from the identity it named, as
    needed after aliases were edited or removed by hand.

    A settle that changes people logs who changed in people_changes and moves
    people_state.generation on, as the last statement of its transaction: imports
    running meanwhile read it as they commit. Its re-pointing reads the index ranges
    of those users by user_id with locks, kept to the end of that transaction (on
    MySQL, at REPEATABLE READ): an import's row for one of them is either seen there
    (the settle waits for its commit) or written after the generation moved on, and
    that import then re-points it itself (steps.Importer). The settle before an
    import leaves the re-pointing to a job beside the import (kmdb.load.repoint).

    Indexes put off by a first import are built first; before_import (the settle
    between the scans and the import) leaves them put off while the tables are empty.
    """
    with held(engine, SETTLE_LOCK):
        built = indexes.build(engine, only_with_rows=before_import)
        sightings, new_aliases = _merge(engine, tmp_dir)
        if full:
            _intern_names(engine, full=True)

        def run() -> tuple[int, int, int]:
            with engine.begin() as conn:
                # One transaction: a settle that dies leaves people stale for the next one.
                newest, upto = _aliases_marks(conn)
                if not full and upto is not None and newest <= upto:
                    # People are as the last settle left them (kmdb-realias is the tool
                    # for aliases edited by hand); rows may still be pending a re-point.
                    if before_import or repoint.pending_since(conn) is None:
                        return 0, 0, 0
                    return (0, *_apply(conn, [], full, tmp_dir))
                if full or not upto:
                    # No canonical ids yet (never settled, or no aliases): all at once.
                    changes = _people_changes(conn)
                else:
                    changes = _touched_people_changes(conn, upto)
                events_moved, properties_moved = _apply(
                    conn, changes, full, tmp_dir, defer=before_import
                )
                _mark_settled(conn, newest)
                if changes:
                    _next_generation(conn)  # last: see the docstring
                return len(changes), events_moved, properties_moved

        changed, events_moved, properties_moved = retrying_lock_conflicts(run)
    result = Settled(sightings, new_aliases, changed, events_moved, properties_moved, len(built))
    log.info("Settled identities: %s", result)
    return result
