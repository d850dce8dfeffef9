"""The database schema, one SQLAlchemy Core definition for MySQL/MariaDB and SQLite.

The seed's tables and columns (events, properties, keys, users, aliases and the
three filter tables) are a public interface: people write SQL against them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.ext.compiler import compiles

NAME_LENGTH = 255


class Name(String):
    """A name or value of up to 255 characters that compares exactly.

    On MySQL it gets a binary NO PAD collation: with utf8mb4_bin (PAD SPACE) a
    unique index would call 'bob' and 'bob ' the same person.
    """

    def __init__(self) -> None:
        super().__init__(NAME_LENGTH)


@compiles(Name, "mysql")
def _name_on_mysql(type_: Name, compiler: object, **kw: object) -> str:
    dialect = compiler.dialect  # type: ignore[attr-defined]
    if dialect.is_mariadb:
        collation = "utf8mb4_nopad_bin"
    elif dialect.server_version_info and dialect.server_version_info >= (8,):
        collation = "utf8mb4_0900_bin"
    else:  # MySQL 5.7 has no NO PAD binary collation; trailing spaces then compare equal
        collation = "utf8mb4_bin"
    return f"VARCHAR({type_.length}) CHARACTER SET utf8mb4 COLLATE {collation}"


# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")

# Times are UTC without a zone; on SQLite stored as 'YYYY-MM-DD HH:MM:SS' like MySQL shows them.
Time = DateTime().with_variant(
    sqlite.DATETIME(  # type: ignore[no-untyped-call]  # SQLAlchemy leaves its __init__ untyped
        storage_format="%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d",
        regexp=r"(\d+)-(\d+)-(\d+) (\d+):(\d+):(\d+)",
    ),
    "sqlite",
)

LongText = Text().with_variant(mysql.MEDIUMTEXT(charset="utf8mb4"), "mysql")

metadata = MetaData()
# Any: Table() checks ** keywords against its typed ones (quote: bool, ...), not just **kw.
_mysql: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}

# --- The imported data ------------------------------------------------------

keys = Table(
    "keys",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("string", Name(), nullable=False, unique=True),
    **_mysql,
)

users = Table(
    "users",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", Name(), nullable=False, unique=True),
    # The users.id of this identity's person (its canonical identity); NULL while it is its own.
    Column("canonical_id", BigInteger, nullable=True),
    # A settle finds the members of the people that new aliases touch through it.
    # A database made before it gets it from indexes.build (create_all adds no index
    # to a table that exists).
    Index("users_canonical", "canonical_id"),
    **_mysql,
)

# events, properties and aliases may be partitioned by t, so every unique key includes t.
events = Table(
    "events",
    metadata,
    # revision * 10**12 + line number: the same line always gets the same id.
    Column("id", BigInteger, nullable=False, autoincrement=False),
    Column("t", Time, nullable=False),
    Column("n", BigInteger, nullable=False),
    Column("user_id", BigInteger, nullable=False),
    # The identity the line itself named (_p); user_id is its person's canonical identity.
    Column("identity_id", BigInteger, nullable=False),
    PrimaryKeyConstraint("id", "t"),
    **_mysql,
)

properties = Table(
    "properties",
    metadata,
    # revision * 10**12 + the property's position in its revision file.
    Column("id", BigInteger, nullable=False, autoincrement=False),
    Column("t", Time, nullable=False),
    Column("key", BigInteger, nullable=False),
    Column("value", Name(), nullable=False),
    Column("user_id", BigInteger, nullable=False),
    Column("event_id", BigInteger, nullable=True),
    Column("identity_id", BigInteger, nullable=False),
    PrimaryKeyConstraint("id", "t"),
    Index("properties_user_key_t", "user_id", "key", "t"),
    Index("properties_event", "event_id"),
    **_mysql,
)

# The indexes the reports read through (kmdb/reports/stream.py): each holds every
# column its query needs, so a report never reads the tables themselves, which outgrow
# the database's cache (MariaDB's default buffer pool) long before these indexes do.
# They extend an older kmdb's events_user_t (user_id, t), events_n_t (n, t) and
# properties_key_t (key, t) and serve every query those did; indexes.build drops those.
Index("events_user_t_n", events.c.user_id, events.c.t, events.c.n)
Index("events_n_t_user", events.c.n, events.c.t, events.c.user_id)
Index(
    "properties_key_t_user_value",
    properties.c.key,
    properties.c.t,
    properties.c.user_id,
    properties.c.value,
)

aliases = Table(
    "aliases",
    metadata,
    Column("id", BigInteger, nullable=False, autoincrement=False),
    Column("name1", Name(), nullable=False),
    Column("name2", Name(), nullable=False),
    Column("t", Time, nullable=False),
    PrimaryKeyConstraint("id", "t"),
    Index("aliases_names", "name1", "name2"),
    Index("aliases_name2", "name2"),
    **_mysql,
)

# --- The import's own bookkeeping --------------------------------------------

revisions = Table(
    "revisions",
    metadata,
    Column("number", Integer, primary_key=True, autoincrement=False),
    Column("status", String(16), nullable=False, default="pending"),
    # Whether the first pass has recorded this file's alias lines in alias_sightings.
    Column("scanned", Boolean, nullable=False, default=False),
    Column("lines_done", BigInteger, nullable=False, default=0),
    Column("bytes_done", BigInteger, nullable=False, default=0),
    Column("properties_done", BigInteger, nullable=False, default=0),
    Column("events", BigInteger, nullable=False, default=0),
    Column("properties", BigInteger, nullable=False, default=0),
    Column("aliases", BigInteger, nullable=False, default=0),
    Column("rejected", BigInteger, nullable=False, default=0),
    Column("size", BigInteger, nullable=True),
    Column("error", Text, nullable=True),
    Column("started_at", DateTime, nullable=True),
    Column("finished_at", DateTime, nullable=True),
    **_mysql,
)

# A revision file is imported in parts of about KMDB_PART_SIZE bytes, each a job of
# its own, so that several workers share one big file. A part owns the lines that
# begin in its byte range; the scan finds where its first line starts (start_byte,
# start_line) and where the next part's does (end_byte). Progress is per part:
# lines_done is the number of the last line committed, bytes_done the offset after it.
revision_parts = Table(
    "revision_parts",
    metadata,
    Column("revision", Integer, nullable=False, autoincrement=False),
    Column("part", Integer, nullable=False, autoincrement=False),
    Column("first_byte", BigInteger, nullable=False),
    Column("start_byte", BigInteger, nullable=True),
    Column("start_line", BigInteger, nullable=True),
    Column("end_byte", BigInteger, nullable=True),
    Column("status", String(16), nullable=False, default="pending"),
    Column("lines_done", BigInteger, nullable=False, default=0),
    Column("bytes_done", BigInteger, nullable=False, default=0),
    Column("properties_done", BigInteger, nullable=False, default=0),
    Column("events", BigInteger, nullable=False, default=0),
    Column("properties", BigInteger, nullable=False, default=0),
    Column("rejected", BigInteger, nullable=False, default=0),
    Column("error", Text, nullable=True),
    PrimaryKeyConstraint("revision", "part"),
    **_mysql,
)

rejected_lines = Table(
    "rejected_lines",
    metadata,
    Column("revision", Integer, nullable=False),
    Column("line", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("text", LongText, nullable=False),
    PrimaryKeyConstraint("revision", "line"),
    **_mysql,
)

# Alias lines as read, until the identity step folds them into `aliases`.
alias_sightings = Table(
    "alias_sightings",
    metadata,
    Column("revision", Integer, nullable=False),
    Column("line", BigInteger, nullable=False),
    Column("name1", Name(), nullable=False),
    Column("name2", Name(), nullable=False),
    Column("t", Time, nullable=False),
    PrimaryKeyConstraint("revision", "line"),
    **_mysql,
)

# How far people have been computed: scans fold their sightings into aliases as
# they go, and the settle step recomputes people when aliases has rows beyond this.
settle_state = Table(
    "settle_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    # The largest aliases.id that the people in users.canonical_id account for.
    Column("aliases_upto", BigInteger, nullable=False),
    **_mysql,
)

# Which users' canonical ids each settle changed, so that an import that read
# canonical ids before a settle of another import's changed them re-points its own
# rows as it commits them (kmdb.pipeline.steps). A settle that changes people logs
# them under generation + 1, then moves people_state.generation on, last.
people_state = Table(
    "people_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("generation", BigInteger, nullable=False),
    **_mysql,
)

people_changes = Table(
    "people_changes",
    metadata,
    Column("user_id", BigInteger, nullable=False, autoincrement=False),
    Column("generation", BigInteger, nullable=False, autoincrement=False),
    # By user first: an import looks its rows' identities up in it.
    PrimaryKeyConstraint("user_id", "generation"),
    # A re-point reads the users changed after a generation: through this index, the
    # changes since, not every change the database ever had. A database made before it
    # gets it from indexes.build, as users_canonical.
    Index("people_changes_generation", "generation"),
    **_mysql,
)

# Rows of users a settle changed that may still point at old canonical ids: the
# settle before an import leaves them to a job of their own beside the import's jobs
# (kmdb.load.repoint). Its one row, when present, holds the generation of people
# after which people_changes' users are still to re-point; no row: none are.
repoint_state = Table(
    "repoint_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("since", BigInteger, nullable=False),
    **_mysql,
)

# A random number drawn when the tables are made and each time they are emptied
# (kmdb.load.epoch). A worker keeps the ids it interned from one job to the next
# only while it and people_state.generation stay the same. Not imported data:
# a flush draws it anew instead of emptying it.
database_epoch = Table(
    "database_epoch",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("epoch", BigInteger, nullable=False),
    **_mysql,
)

# --- Filters: configuration the user fills before importing -----------------

ignored_users = Table("ignored_users", metadata, Column("name", Name(), primary_key=True), **_mysql)
whitelisted_events = Table(
    "whitelisted_events", metadata, Column("name", Name(), primary_key=True), **_mysql
)
blacklisted_properties = Table(
    "blacklisted_properties", metadata, Column("name", Name(), primary_key=True), **_mysql
)

IMPORTED = (
    events,
    properties,
    aliases,
    alias_sightings,
    settle_state,
    people_state,
    people_changes,
    repoint_state,
    users,
    keys,
    rejected_lines,
    revisions,
    revision_parts,
)
FILTERS = (ignored_users, whitelisted_events, blacklisted_properties)
PARTITIONED = (events, properties, aliases)
