"""kmdb.models on SQLite and MariaDB: against the model on a sample, and exactly on a tiny export."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, selectinload

from kmdb.extract.local import LocalSource
from kmdb.load.database import create_schema
from kmdb.models import DetachedError, Event, Key, Property, User, session
from kmdb.pipeline.discovery import new_revisions
from kmdb.pipeline.inline import import_inline
from kmdb.sample import write_sample
from kmdb.settings import Settings
from tests.model import expected, read_export


def run_import(engine: Engine, settings: Settings, folder: Path) -> None:
    source = LocalSource(str(folder))
    create_schema(engine)
    import_inline(engine, source, settings, new_revisions(engine, source, settings))


def count(s: Session, query: object) -> int:
    return s.scalar(select(func.count()).select_from(query.subquery()))  # type: ignore[attr-defined]


def test_models_agree_with_the_model_on_a_sample(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 3_000, seed=8, lines_per_revision=400)
    run_import(engine, settings, folder)
    wanted = expected(read_export(folder))
    names: Counter[str] = Counter()
    for (_, name, _, _), n in wanted.events.items():
        names[name] += n
    assert len(names) >= 5
    with Session(engine) as s:
        # Event.named(name) counts, for every event name; an unknown name has none.
        for name, n in names.items():
            assert count(s, Event.named(name)) == n, name
        assert count(s, Event.named("no such event")) == 0
        assert len(s.scalars(Event.named("signed up")).all()) == names["signed up"]
        grouped = dict(s.execute(select(Event.name, func.count()).group_by(Event.name)).all())
        assert grouped == dict(names)

        # Every event through the ORM: its time, .name, .user and .properties.
        events = s.scalars(
            select(Event).options(selectinload(Event.user), selectinload(Event.properties))
        ).all()
        assert (
            Counter(
                (
                    str(e.t),
                    e.name,
                    e.user.name,
                    tuple(sorted((p.name, p.value) for p in e.properties)),
                )
                for e in events
            )
            == wanted.events
        )
        for e in events[:200]:
            assert all(e.prop(p.name) == p.value and p.event is e for p in e.properties)
            assert e.prop("no such property") is None

        # Property sets: .name, .user, no .event.
        sets = s.scalars(select(Property).where(Property.event_id.is_(None))).all()
        assert Counter((str(p.t), p.user.name, p.name, p.value) for p in sets) == wanted.sets
        assert all(p.event is None for p in sets[:100])

        # User.prop: the latest value by time; the model knows no ids, so a tie may go either way.
        latest: dict[tuple[str, str], tuple[str, set[str]]] = {}
        rows = [(t, who, k, v) for t, who, k, v in wanted.sets] + [
            (t, who, k, v) for t, _, who, props in wanted.events for k, v in props
        ]
        for t, who, k, v in rows:
            best = latest.get((who, k))
            if best is None or t > best[0]:
                latest[who, k] = (t, {v})
            elif t == best[0]:
                best[1].add(v)
        people = {who for who, _ in latest}
        keys = sorted({k for _, k in latest})
        checked = 0
        for user in s.scalars(select(User).where(User.name.in_(sorted(people)[:40]))):
            for k in keys:
                value = user.prop(k)
                if (user.name, k) in latest:
                    assert value in latest[user.name, k][1], (user.name, k, value)
                    checked += 1
                else:
                    assert value is None
        assert checked > 40


def line(**fields: object) -> bytes:
    return orjson.dumps(fields)


T0 = dt.datetime(1970, 1, 1)


def at(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def tiny_export(folder: Path) -> Path:
    """Two revisions of a few lines whose answers are known exactly."""
    revisions = {
        1: [
            line(_p="anon", _t=100, plan="free"),
            line(_n="signed up", _p="bob@x", _t=200, plan="trial", source="ad"),
            line(_p="anon", _p2="bob@x", _t=150),
            # Same time as the event's "source": the later line (higher id) is the latest.
            line(_p="bob@x", _t=200, source="newsletter", color="red"),
            line(_n="visited site", _p="anon", _t=50, url="/"),
            line(_p="carol", _t=10, plan="free"),
            line(_n="visited site", _p="carol", _t=400, url="/pricing"),
        ],
        2: [
            # A later revision but an earlier time: not the latest.
            line(_p="bob@x", _t=120, plan="silver"),
            # An event property is the person's latest value too.
            line(_n="billed", _p="anon", _t=250, plan="platinum", amount=9.99),
            # Same time as revision 1's "red", in a later revision: the latest.
            line(_n="purchased", _p="bob@x", _t=200, color="blue"),
            line(_p=42, _p2="bob@x", _t=300),
        ],
    }
    (folder / "revisions").mkdir(parents=True)
    for number, lines in revisions.items():
        (folder / "revisions" / f"{number}.json").write_bytes(b"\n".join(lines) + b"\n")
    return folder


def test_models_on_known_lines(
    engine: Engine,
    settings: Settings,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_import(engine, settings, tiny_export(tmp_path / "export"))
    with session(database_url) as s:
        bob = s.scalars(User.named("bob@x")).one()
        person = bob.person
        assert (person.name, bob.canonical.name, person.canonical, person.person) == (
            "42",
            "42",
            None,
            person,
        )
        assert [u.name for u in person.identities] == ["anon", "bob@x"]
        assert s.scalars(User.named("nobody")).first() is None

        # The latest value over property sets and event properties, by time then id.
        for who in ("bob@x", "anon", "42"):
            user = s.scalars(User.named(who)).one()
            assert user.prop("plan") == "platinum"
            assert user.prop("source") == "newsletter"
            assert user.prop("color") == "blue"
            assert user.prop("amount") == "9.99"
            assert user.prop("url") == "/"
            assert user.prop("no such key") is None
        carol = s.scalars(User.named("carol")).one()
        assert (carol.person, carol.prop("plan"), carol.prop("source")) == (carol, "free", None)

        # Events: .name, .user (the person), .identity (the line's own), .properties, .prop.
        assert [(e.t, e.name, e.identity.name) for e in person.events] == [
            (at(50), "visited site", "anon"),
            (at(200), "signed up", "bob@x"),
            (at(200), "purchased", "bob@x"),
            (at(250), "billed", "anon"),
        ]
        signed_up = s.scalars(Event.named("signed up")).one()
        assert signed_up.user is person and signed_up.user_id == person.id
        assert sorted((p.name, p.value) for p in signed_up.properties) == [
            ("plan", "trial"),
            ("source", "ad"),
        ]
        assert (signed_up.prop("plan"), signed_up.prop("source"), signed_up.prop("x")) == (
            "trial",
            "ad",
            None,
        )
        assert all(p.event is signed_up and p.user is person for p in signed_up.properties)
        assert s.scalars(Key.named("plan")).one().string == "plan"
        # A person's properties, sets and event properties, by time then id.
        assert [(p.t, p.name, p.value, p.event_id is None) for p in person.properties] == [
            (at(50), "url", "/", False),
            (at(100), "plan", "free", True),
            (at(120), "plan", "silver", True),
            (at(200), "plan", "trial", False),
            (at(200), "source", "ad", False),
            (at(200), "source", "newsletter", True),
            (at(200), "color", "red", True),
            (at(200), "color", "blue", False),
            (at(250), "plan", "platinum", False),
            (at(250), "amount", "9.99", False),
        ]

        # before / after are strict, take aware datetimes, and refine a query.
        def names(query: object) -> list[str]:
            return [e.name for e in s.scalars(query.order_by(Event.t, Event.id))]  # type: ignore[attr-defined]

        assert names(Event.before(at(200))) == ["visited site"]
        assert names(Event.after(at(200))) == ["billed", "visited site"]
        assert names(Event.after(at(199))) == ["signed up", "purchased", "billed", "visited site"]
        utc_plus_1 = dt.timezone(dt.timedelta(hours=1))
        aware = (at(200) + dt.timedelta(hours=1)).replace(tzinfo=utc_plus_1)
        assert names(Event.after(aware)) == ["billed", "visited site"]
        assert names(Event.before(at(300), Event.named("visited site"))) == ["visited site"]
        assert names(
            Event.after(at(0), Event.named("visited site")).where(Event.user == carol)
        ) == ["visited site"]
        assert names(Event.before(at(401), Event.after(at(100)))) == names(Event.after(at(100)))
        assert count(s, Event.named("visited site")) == 2

    # Objects outside their session cannot query.
    with pytest.raises(DetachedError):
        carol.prop("plan")

    # session() with no URL reads DATABASE_URL.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", database_url)
    with session() as s:
        assert s.scalar(select(func.count()).select_from(Event)) == 5
