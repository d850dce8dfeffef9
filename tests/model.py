"""An independent model of the import contract, and a dump of the database to compare with it.

The model reads lines with kmdb.transform.parse (tested on its own against the contract's
cases) and applies the filters, alias rules and canonical identities in the
plainest way possible: no database, no chunks, a graph search for people.
Both sides are reduced to names, so ids do not matter.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, text

from kmdb.transform.parse import Record, Rejection, parse_line


@dataclass
class Result:
    """Rows by name: what the contract says the database holds."""

    events: Counter = field(default_factory=Counter)  # (t, name, person, properties)
    sets: Counter = field(default_factory=Counter)  # (t, person, key, value)
    aliases: set = field(default_factory=set)  # (name1, name2, t)
    rejected: set = field(default_factory=set)  # (revision, line)


def _numeric(s: str) -> bool:
    return s != "" and all("0" <= c <= "9" for c in s)


def _utc(t: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def expected(
    revisions: dict[int, list[bytes]],
    ignored: frozenset[str] = frozenset(),
    whitelist: frozenset[str] = frozenset(),
    blacklist: frozenset[str] = frozenset(),
) -> Result:
    """What importing these revisions (number -> raw lines) must give."""
    kept: list[Record] = []
    result = Result()
    first_seen: dict[tuple[str, str], int] = {}
    for number in sorted(revisions):
        for line_no, raw in enumerate(revisions[number], start=1):
            record = parse_line(raw)
            if record is None:
                continue
            if isinstance(record, Rejection):
                result.rejected.add((number, line_no))
                continue
            if record.p in ignored or (record.p2 is not None and record.p2 in ignored):
                continue
            if record.kind == "alias":
                a, b = record.p, record.p2
                assert b is not None
                if a == b or (_numeric(a) and _numeric(b)):
                    continue
                if _numeric(b) or (not _numeric(a) and b < a):
                    a, b = b, a
                first_seen[(a, b)] = min(first_seen.get((a, b), record.t), record.t)
                continue
            if record.kind == "event" and whitelist and record.n not in whitelist:
                continue
            kept.append(record)

    links: dict[str, set[str]] = {}
    for a, b in first_seen:
        links.setdefault(a, set()).add(b)
        links.setdefault(b, set()).add(a)
    person: dict[str, str] = {}
    for start in links:
        if start in person:
            continue
        group, todo = {start}, [start]
        while todo:
            for other in links[todo.pop()]:
                if other not in group:
                    group.add(other)
                    todo.append(other)
        numeric = [g for g in group if _numeric(g)]
        best = min(numeric, key=lambda g: (int(g), g)) if numeric else min(group)
        for g in group:
            person[g] = best

    for r in kept:
        who = person.get(r.p, r.p)
        props = tuple(sorted((k, v) for k, v in r.properties if k not in blacklist))
        if r.kind == "event":
            result.events[(_utc(r.t), r.n, who, props)] += 1
        else:
            for k, v in props:
                result.sets[(_utc(r.t), who, k, v)] += 1
    result.aliases = {(a, b, _utc(t)) for (a, b), t in first_seen.items()}
    return result


def read_export(folder: Path) -> dict[int, list[bytes]]:
    """The raw lines of every revision file of an export folder."""
    found = {}
    for path in (folder / "revisions").glob("*.json"):
        # Only N.json, N without leading zeros, is a revision; a file that cannot be
        # read (a dangling symlink) is none either.
        if not path.stem.isdigit() or not path.stem.isascii() or path.stem != str(int(path.stem)):
            continue
        if not path.is_file():
            continue
        data = path.read_bytes()
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        found[int(path.stem)] = lines
    return found


def dump(engine: Engine) -> Result:
    """The database's rows, reduced to names like the model's."""

    def ts(value: object) -> str:
        return str(value)[:19]

    result = Result()
    with engine.connect() as conn:
        props: dict[int, list[tuple[str, str]]] = {}
        for event_id, key, value, t, user in conn.execute(
            text(
                "SELECT p.event_id, k.string, p.value, p.t, u.name FROM properties p "
                "JOIN `keys` k ON k.id = p.`key` JOIN users u ON u.id = p.user_id"
                if engine.dialect.name != "sqlite"
                else "SELECT p.event_id, k.string, p.value, p.t, u.name FROM properties p "
                'JOIN "keys" k ON k.id = p."key" JOIN users u ON u.id = p.user_id'
            )
        ):
            if event_id is None:
                result.sets[(ts(t), user, key, value)] += 1
            else:
                props.setdefault(event_id, []).append((key, value, ts(t), user))
        for event_id, t, name, user in conn.execute(
            text(
                "SELECT e.id, e.t, k.string, u.name FROM events e "
                "JOIN keys k ON k.id = e.n JOIN users u ON u.id = e.user_id".replace(
                    "keys", "`keys`" if engine.dialect.name != "sqlite" else '"keys"'
                )
            )
        ):
            own = props.pop(event_id, [])
            # An event's properties carry its time and person.
            assert all(p[2] == ts(t) and p[3] == user for p in own), (event_id, own)
            result.events[(ts(t), name, user, tuple(sorted((k, v) for k, v, *_ in own)))] += 1
        assert not props, f"properties of missing events: {list(props)[:5]}"
        result.aliases = {
            (a, b, ts(t)) for a, b, t in conn.execute(text("SELECT name1, name2, t FROM aliases"))
        }
        result.rejected = {
            tuple(row) for row in conn.execute(text("SELECT revision, line FROM rejected_lines"))
        }
    return result


def assert_same(found: Result, wanted: Result) -> None:
    """Compare dump and model field by field, showing a few differences."""
    for name in ("events", "sets"):
        a, b = getattr(found, name), getattr(wanted, name)
        if a != b:
            extra, missing = list((a - b).items())[:3], list((b - a).items())[:3]
            raise AssertionError(f"{name} differ: extra {extra} missing {missing}")
    assert found.aliases == wanted.aliases, (
        sorted(found.aliases - wanted.aliases)[:3],
        sorted(wanted.aliases - found.aliases)[:3],
    )
    assert found.rejected == wanted.rejected
