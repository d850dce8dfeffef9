"""Reading the user's filter tables (ignored users, whitelisted events, blacklisted properties)."""

from __future__ import annotations

from sqlalchemy import Connection, Table, select

from kmdb.load import schema
from kmdb.transform.filters import Filters


def read_filters(conn: Connection) -> Filters:
    """The filters as the three tables hold them now."""

    def names(table: Table) -> frozenset[str]:
        return frozenset(conn.execute(select(table.c.name)).scalars())

    return Filters(
        names(schema.ignored_users),
        names(schema.whitelisted_events),
        names(schema.blacklisted_properties),
    )
