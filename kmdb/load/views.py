"""Views that let plain SQL read like the KM data: names instead of integer keys.

- named_events(id, t, event, person, identity, user_id): one row per event;
  `event` is its name, `person` the name of its person's canonical identity,
  `identity` the name the line itself used, `user_id` the person's users.id.
- named_properties(id, t, property, value, person, identity, user_id, event_id, event):
  one row per property; `event_id` and `event` (the event's name) are NULL for
  property sets.
- named_users(id, name, person_id, person): every identity with its person's
  users.id and canonical name (an identity that is its own person names itself).

docs/cookbook.md shows them at work.
"""

from __future__ import annotations

from sqlalchemy import Engine, text

from kmdb.load.engine import is_mysql

VIEWS = ["named_events", "named_properties", "named_users"]

# {keys} and {key} are quoted for the database: `keys` is reserved on MySQL, `key` a keyword.
_DEFINITIONS = {
    "named_events": """
SELECT e.id AS id, e.t AS t, k.string AS event, p.name AS person, i.name AS identity,
       e.user_id AS user_id
FROM events e
JOIN {keys} k ON k.id = e.n
JOIN users p ON p.id = e.user_id
JOIN users i ON i.id = e.identity_id
""",
    "named_properties": """
SELECT pr.id AS id, pr.t AS t, k.string AS property, pr.value AS value, p.name AS person,
       i.name AS identity, pr.user_id AS user_id, pr.event_id AS event_id, ek.string AS event
FROM properties pr
JOIN {keys} k ON k.id = pr.{key}
JOIN users p ON p.id = pr.user_id
JOIN users i ON i.id = pr.identity_id
LEFT JOIN events e ON e.id = pr.event_id
LEFT JOIN {keys} ek ON ek.id = e.n
""",
    "named_users": """
SELECT u.id AS id, u.name AS name, COALESCE(u.canonical_id, u.id) AS person_id,
       COALESCE(c.name, u.name) AS person
FROM users u
LEFT JOIN users c ON c.id = u.canonical_id
""",
}


def view_sql(engine: Engine, name: str) -> str:
    """The SELECT behind a view, quoted for the engine's database."""
    quote = engine.dialect.identifier_preparer.quote_identifier
    return _DEFINITIONS[name].format(keys=quote("keys"), key=quote("key")).strip()


def create_views(engine: Engine) -> list[str]:
    """Create or replace every view (the tables must exist); return their names. Idempotent."""
    with engine.begin() as conn:
        for name in VIEWS:
            body = view_sql(engine, name)
            if is_mysql(engine):
                conn.execute(text(f"CREATE OR REPLACE VIEW {name} AS {body}"))
            else:
                conn.execute(text(f"DROP VIEW IF EXISTS {name}"))
                conn.execute(text(f"CREATE VIEW {name} AS {body}"))
    return list(VIEWS)
