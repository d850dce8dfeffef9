"""Reading the user's filter tables (ignored users, whitelisted events, blacklisted properties)."""

from __future__ import annotations

from sqlalchemy import Connection, literal, select, union_all

from kmdb.load import schema
from kmdb.transform.filters import Filters


def read_filters(conn: Connection) -> Filters:
    """The filters as the three tables hold them now (one round trip: every job reads them)."""
    tables = (schema.ignored_users, schema.whitelisted_events, schema.blacklisted_properties)
    query = union_all(
        *(select(literal(i).label("kind"), table.c.name) for i, table in enumerate(tables))
    )
    found: list[set[str]] = [set(), set(), set()]
    for kind, name in conn.execute(query):
        found[kind].add(name)
    return Filters(*(frozenset(names) for names in found))
