"""ORM classes on the imported tables, for ad-hoc questions from a Python shell or a notebook.

The classes map the Core tables of kmdb.load.schema, so the schema is defined once:

    >>> from sqlalchemy import func, select
    >>> from kmdb.models import Event, User, session
    >>> with session() as s:  # DATABASE_URL, or session("sqlite:///kmdb.sqlite3")
    ...     s.scalar(select(func.count()).select_from(Event.named("signed up").subquery()))
    ...     bob = s.scalars(User.named("bob@example.com")).one()
    ...     bob.prop("plan"), [(e.t, e.name) for e in bob.person.events]

The tables have no foreign keys (they are bulk loaded), so every relationship
spells its join out, and all of them are read-only: kmdb's import is what writes.

Times are UTC datetimes without a zone. Beware of `row.t` on a Row from
`session.execute(select(Event.t, ...))`: Row has a `.t` of its own (the row as a
tuple); use `row[0]` or `row._mapping["t"]`. On a mapped object, `event.t` is the time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Select, join, select
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    column_property,
    foreign,
    object_session,
    relationship,
    remote,
)

from kmdb.errors import DetachedError
from kmdb.load import schema
from kmdb.load.engine import make_engine
from kmdb.settings import Settings, from_env, load_dotenv_file, normalize_database_url

__all__ = ["Base", "DetachedError", "Event", "Key", "Property", "User", "session"]

_events, _properties, _keys, _users = schema.events, schema.properties, schema.keys, schema.users


class Base(DeclarativeBase):
    """The mapped classes share kmdb.load.schema's metadata: no second definition of the tables."""

    metadata = schema.metadata


def _utc(t: dt.datetime) -> dt.datetime:
    """A naive UTC datetime, as the tables store; an aware one is converted first."""
    if t.tzinfo is not None:
        t = t.astimezone(dt.UTC).replace(tzinfo=None)
    return t


def _session_of(obj: object) -> Session:
    found = object_session(obj)
    if found is None:
        raise DetachedError(f"{obj!r} belongs to no session; load it in a `with session()` block.")
    return found


class Key(Base):
    """An event or property name (`keys`): events.n and properties.key point here."""

    __table__ = _keys

    id: Mapped[int]
    string: Mapped[str]

    @classmethod
    def named(cls, string: str) -> Select[Any]:
        """A select of the key with this exact name (case and spaces matter)."""
        return select(cls).where(cls.string == string)

    def __repr__(self) -> str:
        return f"Key({self.id}, {self.string!r})"


class User(Base):
    """An identity (`users`): a name KM saw in `_p` or `_p2`.

    Identities linked by aliases are one person, whose canonical identity holds
    every event and property; the others have `canonical_id` set and no rows of
    their own. `.person` is the canonical identity (the user itself when it is one).
    """

    __table__ = _users

    id: Mapped[int]
    name: Mapped[str]
    canonical_id: Mapped[int | None]

    canonical: Mapped[User | None] = relationship(
        primaryjoin=lambda: remote(_users.c.id) == foreign(_users.c.canonical_id),
        viewonly=True,
    )
    # The other identities merged into this person (empty unless this user is canonical).
    identities: Mapped[list[User]] = relationship(
        primaryjoin=lambda: _users.c.id == foreign(remote(_users.c.canonical_id)),
        viewonly=True,
        order_by=lambda: _users.c.name,
    )
    events: Mapped[list[Event]] = relationship(
        primaryjoin=lambda: _users.c.id == foreign(_events.c.user_id),
        viewonly=True,
        order_by=lambda: (_events.c.t, _events.c.id),
    )
    # Property sets and event properties alike, in time order.
    properties: Mapped[list[Property]] = relationship(
        primaryjoin=lambda: _users.c.id == foreign(_properties.c.user_id),
        viewonly=True,
        order_by=lambda: (_properties.c.t, _properties.c.id),
    )

    @property
    def person_id(self) -> int:
        """The users.id of this identity's person (its canonical identity)."""
        return self.canonical_id if self.canonical_id is not None else self.id

    @property
    def person(self) -> User:
        """The canonical identity of this identity's person: it holds the events and properties."""
        return self.canonical if self.canonical is not None else self

    def prop(self, key: str) -> str | None:
        """The person's latest value of a property, or None if it was never set.

        Latest by time, then by row id (later lines and revisions win ties), over
        property sets and event properties alike: KM sets an event's properties
        on its person too. Called on any identity, it answers for the whole person.
        """
        p = _properties
        query = (
            select(p.c.value)
            .join(_keys, _keys.c.id == p.c.key)
            .where(p.c.user_id == self.person_id, _keys.c.string == key)
            .order_by(p.c.t.desc(), p.c.id.desc())
            .limit(1)
        )
        return _session_of(self).scalar(query)

    @classmethod
    def named(cls, name: str) -> Select[Any]:
        """A select of the identity with this exact name; use `.person` for its person."""
        return select(cls).where(cls.name == name)

    def __repr__(self) -> str:
        return f"User({self.id}, {self.name!r})"


class Event(Base):
    """One event line (`events`): `.t` (UTC), `.name`, `.user` (its person) and `.properties`."""

    # Mapped on events joined to their name, so that Event.name works in any query,
    # e.g. select(Event.name, func.count()).group_by(Event.name).
    __table__ = join(_events, _keys, _events.c.n == _keys.c.id)
    __mapper_args__ = {"primary_key": [_events.c.id, _events.c.t]}

    id: Mapped[int] = column_property(_events.c.id)
    t: Mapped[dt.datetime] = column_property(_events.c.t)
    n: Mapped[int] = column_property(_events.c.n, _keys.c.id)
    name: Mapped[str] = column_property(_keys.c.string)
    user_id: Mapped[int] = column_property(_events.c.user_id)
    identity_id: Mapped[int] = column_property(_events.c.identity_id)

    user: Mapped[User] = relationship(
        primaryjoin=lambda: foreign(_events.c.user_id) == _users.c.id, viewonly=True
    )
    # The identity the line itself named (`_p`); `.user` is its person.
    identity: Mapped[User] = relationship(
        primaryjoin=lambda: foreign(_events.c.identity_id) == _users.c.id, viewonly=True
    )
    properties: Mapped[list[Property]] = relationship(
        primaryjoin=lambda: _events.c.id == foreign(_properties.c.event_id),
        viewonly=True,
        order_by=lambda: _properties.c.id,
    )

    def prop(self, key: str) -> str | None:
        """The value of this event's property `key`, or None if the event has none."""
        for found in self.properties:
            if found.name == key:
                return found.value
        return None

    @classmethod
    def named(cls, name: str) -> Select[Any]:
        """A select of the events with this exact name (refine it with .where, .order_by...)."""
        return select(cls).where(cls.name == name)

    @classmethod
    def before(cls, t: dt.datetime, query: Select[Any] | None = None) -> Select[Any]:
        """Events strictly earlier than t (UTC; an aware datetime is converted), or those of query."""
        return (select(cls) if query is None else query).where(cls.t < _utc(t))

    @classmethod
    def after(cls, t: dt.datetime, query: Select[Any] | None = None) -> Select[Any]:
        """Events strictly later than t (UTC; an aware datetime is converted), or those of query."""
        return (select(cls) if query is None else query).where(cls.t > _utc(t))

    def __repr__(self) -> str:
        return f"Event({self.id}, {self.t}, {self.name!r})"


class Property(Base):
    """A property (`properties`): of an event when `event_id` is set, else a property set."""

    # Mapped on properties joined to their name, like Event.
    __table__ = join(_properties, _keys, _properties.c.key == _keys.c.id)
    __mapper_args__ = {"primary_key": [_properties.c.id, _properties.c.t]}

    id: Mapped[int] = column_property(_properties.c.id)
    t: Mapped[dt.datetime] = column_property(_properties.c.t)
    key: Mapped[int] = column_property(_properties.c.key, _keys.c.id)
    name: Mapped[str] = column_property(_keys.c.string)
    value: Mapped[str] = column_property(_properties.c.value)
    user_id: Mapped[int] = column_property(_properties.c.user_id)
    event_id: Mapped[int | None] = column_property(_properties.c.event_id)
    identity_id: Mapped[int] = column_property(_properties.c.identity_id)

    event: Mapped[Event | None] = relationship(
        primaryjoin=lambda: foreign(_properties.c.event_id) == _events.c.id,
        viewonly=True,
    )
    user: Mapped[User] = relationship(
        primaryjoin=lambda: foreign(_properties.c.user_id) == _users.c.id, viewonly=True
    )
    identity: Mapped[User] = relationship(
        primaryjoin=lambda: foreign(_properties.c.identity_id) == _users.c.id, viewonly=True
    )

    def __repr__(self) -> str:
        return f"Property({self.id}, {self.t}, {self.name!r}, {self.value!r})"


@contextmanager
def session(url: str | None = None) -> Iterator[Session]:
    """A Session on DATABASE_URL (read from the environment or `.env`), or on the URL given."""
    if url is None:
        load_dotenv_file()
        settings = from_env()
    else:
        settings = Settings(database_url=normalize_database_url(url))
    engine = make_engine(settings)
    try:
        with Session(engine) as opened:
            yield opened
    finally:
        engine.dispose()
