"""Every recipe of docs/cookbook.md, run on an imported sample and checked against Python.

The sample is imported into SQLite and MariaDB; its tables are first checked
against the independent model (tests/model.py), then read back with plain Core
queries, and each recipe's answer is computed again from those rows in Python.
Answers are compared row for row, in order: since the SQLite and MySQL versions
of a recipe both have to equal the one Python answer, they agree with each other.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Engine, select
from sqlalchemy.sql import alias

from kmdb.extract.local import LocalSource
from kmdb.load import schema
from kmdb.load.database import create_schema
from kmdb.load.views import VIEWS, create_views
from kmdb.pipeline.discovery import new_revisions
from kmdb.pipeline.inline import import_inline
from kmdb.sample import write_sample
from kmdb.settings import Settings
from tests.model import assert_same, dump, expected, read_export

COOKBOOK = Path(__file__).resolve().parents[1] / "docs" / "cookbook.md"
TAG = re.compile(
    r"<!-- recipe: (?P<name>\w+) dialect: (?P<dialect>mysql|sqlite|both) -->\n"
    r"```sql\n(?P<sql>.*?)```",
    re.S,
)
# The person the per-person recipes ask about: an email that the sample links to an account.
PERSON = "renée.garcia49@corp.example.co.uk"


class Recipe(NamedTuple):
    name: str
    dialect: str
    sql: str


def recipes() -> list[Recipe]:
    return [Recipe(m["name"], m["dialect"], m["sql"]) for m in TAG.finditer(COOKBOOK.read_text())]


# --- The imported sample, read back with plain queries ----------------------------------------


class Ev(NamedTuple):
    id: int
    t: dt.datetime
    name: str
    person_id: int
    person: str
    identity: str


class Pr(NamedTuple):
    id: int
    t: dt.datetime
    key: str
    value: str
    person_id: int
    person: str
    identity: str
    event_id: int | None


@dataclass
class Data:
    events: list[Ev]
    props: list[Pr]
    users: dict[str, tuple[int, int | None]]  # name -> (id, canonical_id)

    def props_of(self) -> dict[int, dict[str, str]]:
        found: dict[int, dict[str, str]] = defaultdict(dict)
        for p in self.props:
            if p.event_id is not None:
                found[p.event_id][p.key] = p.value
        return found


def import_sample(engine: Engine, settings: Settings, folder: Path) -> Data:
    """Import the sample, check it against the model, create the views, read the rows back."""
    write_sample(folder, 3_000, seed=11, lines_per_revision=60)
    source = LocalSource(str(folder))
    create_schema(engine)
    import_inline(engine, source, settings, new_revisions(engine, source, settings))
    assert_same(dump(engine), expected(read_export(folder)))
    assert create_views(engine) == VIEWS
    create_views(engine)  # idempotent
    return read_back(engine)


def read_back(engine: Engine) -> Data:
    e, p, k, u = schema.events, schema.properties, schema.keys, schema.users
    person, identity = alias(u, "person"), alias(u, "identity")
    with engine.connect() as conn:
        events = [
            Ev(*row)
            for row in conn.execute(
                select(e.c.id, e.c.t, k.c.string, e.c.user_id, person.c.name, identity.c.name)
                .join(k, k.c.id == e.c.n)
                .join(person, person.c.id == e.c.user_id)
                .join(identity, identity.c.id == e.c.identity_id)
            )
        ]
        props = [
            Pr(*row)
            for row in conn.execute(
                select(
                    p.c.id,
                    p.c.t,
                    k.c.string,
                    p.c.value,
                    p.c.user_id,
                    person.c.name,
                    identity.c.name,
                    p.c.event_id,
                )
                .join(k, k.c.id == p.c.key)
                .join(person, person.c.id == p.c.user_id)
                .join(identity, identity.c.id == p.c.identity_id)
            )
        ]
        users = {name: (id_, canonical) for id_, name, canonical in conn.execute(select(u))}
    return Data(events, props, users)


# --- The answers, computed in Python ----------------------------------------------------------


def ts(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


def monday(t: dt.datetime) -> dt.date:
    return t.date() - dt.timedelta(days=t.weekday())


def events_by_name(d: Data) -> list[tuple[Any, ...]]:
    count, people = Counter(e.name for e in d.events), defaultdict(set)
    for e in d.events:
        people[e.name].add(e.person_id)
    return [(name, count[name], len(people[name])) for name in sorted(count)]


def active_people(period: Callable[[dt.datetime], str]) -> Callable[[Data], list[tuple[Any, ...]]]:
    def answer(d: Data) -> list[tuple[Any, ...]]:
        people = defaultdict(set)
        for e in d.events:
            people[period(e.t)].add(e.person_id)
        return [(key, len(people[key])) for key in sorted(people)]

    return answer


def visit_to_signup_within_7_days(d: Data) -> list[tuple[Any, ...]]:
    first_visit: dict[int, dt.datetime] = {}
    for e in d.events:
        if e.name == "visited site":
            first_visit[e.person_id] = min(e.t, first_visit.get(e.person_id, e.t))
    signed_up = {
        e.person_id
        for e in d.events
        if e.name == "signed up"
        and e.person_id in first_visit
        and first_visit[e.person_id] <= e.t < first_visit[e.person_id] + dt.timedelta(days=7)
    }
    return [(len(first_visit), len(signed_up))]


def viewed_product_by_category(d: Data) -> list[tuple[Any, ...]]:
    props = d.props_of()
    views: Counter[str | None] = Counter()
    people = defaultdict(set)
    for e in d.events:
        if e.name == "viewed product":
            category = props[e.id].get("category")
            views[category] += 1
            people[category].add(e.person_id)
    rows = [(c, views[c], len(people[c])) for c in views]
    return sorted(rows, key=lambda r: (-r[1], r[0] is not None, r[0] or ""))


def cart_items_by_product(d: Data) -> list[tuple[Any, ...]]:
    props = d.props_of()
    adds: Counter[str] = Counter()
    items: Counter[str] = Counter()
    for e in d.events:
        own = props[e.id]
        if e.name == "added to cart" and "product" in own and "quantity" in own:
            adds[own["product"]] += 1
            items[own["product"]] += int(own["quantity"])
    return sorted(((p, adds[p], items[p]) for p in adds), key=lambda r: (-r[2], r[0]))


def first_touches(d: Data) -> dict[int, Pr]:
    first: dict[int, Pr] = {}
    for p in d.props:
        if p.key == "campaign name" and (
            p.person_id not in first or (p.t, p.id) < (first[p.person_id].t, first[p.person_id].id)
        ):
            first[p.person_id] = p
    return first


def first_touch_campaign(d: Data) -> list[tuple[Any, ...]]:
    return sorted((p.person, p.value, ts(p.t)) for p in first_touches(d).values())


def people_by_first_touch_campaign(d: Data) -> list[tuple[Any, ...]]:
    buyers = {e.person_id for e in d.events if e.name == "purchased"}
    people: Counter[str] = Counter()
    bought: Counter[str] = Counter()
    for person_id, p in first_touches(d).items():
        people[p.value] += 1
        bought[p.value] += person_id in buyers
    return sorted(((c, people[c], bought[c]) for c in people), key=lambda r: (-r[1], r[0]))


def weekly_retention(d: Data) -> list[tuple[Any, ...]]:
    first: dict[int, dt.datetime] = {}
    for e in d.events:
        first[e.person_id] = min(e.t, first.get(e.person_id, e.t))
    active = {
        (
            monday(first[e.person_id]),
            e.person_id,
            (e.t.date() - monday(first[e.person_id])).days // 7,
        )
        for e in d.events
    }
    cells = Counter((cohort, week) for cohort, _, week in active)
    return [(cohort.isoformat(), week, cells[cohort, week]) for cohort, week in sorted(cells)]


def person_id(d: Data, name: str) -> int:
    id_, canonical = d.users[name]
    return id_ if canonical is None else canonical


def what_did_this_person_do(d: Data) -> list[tuple[Any, ...]]:
    who, props = person_id(d, PERSON), d.props_of()
    rows = []
    for e in sorted((e for e in d.events if e.person_id == who), key=lambda e: (e.t, e.id)):
        own = sorted(props[e.id].items()) or [(None, None)]
        rows.extend((ts(e.t), e.name, e.identity, key, value) for key, value in own)
    return rows


def person_profile(d: Data) -> list[tuple[Any, ...]]:
    who = person_id(d, PERSON)
    latest: dict[str, Pr] = {}
    for p in d.props:
        if p.person_id == who and (
            p.key not in latest or (p.t, p.id) > (latest[p.key].t, latest[p.key].id)
        ):
            latest[p.key] = p
    return [(key, latest[key].value, ts(latest[key].t)) for key in sorted(latest)]


ANSWERS: dict[str, Callable[[Data], list[tuple[Any, ...]]]] = {
    "events_by_name": events_by_name,
    "daily_active_people": active_people(lambda t: t.date().isoformat()),
    "weekly_active_people": active_people(lambda t: monday(t).isoformat()),
    "monthly_active_people": active_people(lambda t: t.strftime("%Y-%m")),
    "visit_to_signup_within_7_days": visit_to_signup_within_7_days,
    "viewed_product_by_category": viewed_product_by_category,
    "cart_items_by_product": cart_items_by_product,
    "first_touch_campaign": first_touch_campaign,
    "people_by_first_touch_campaign": people_by_first_touch_campaign,
    "weekly_retention": weekly_retention,
    "what_did_this_person_do": what_did_this_person_do,
    "person_profile": person_profile,
}


# --- Running the recipes ----------------------------------------------------------------------


def plain(value: object) -> object:
    """A value as both databases can agree on: times as MySQL shows them, whole numbers as int."""
    if isinstance(value, dt.datetime):
        return ts(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def run(engine: Engine, sql: str) -> list[tuple[Any, ...]]:
    """Run a recipe as a database client would: through the driver, with no parameters."""
    with engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql)
            return [tuple(plain(v) for v in row) for row in cursor.fetchall()]
        finally:
            cursor.close()


def dialect_of(engine: Engine) -> str:
    return "sqlite" if engine.dialect.name == "sqlite" else "mysql"


# --- The tests --------------------------------------------------------------------------------


def test_every_recipe_is_tagged_checked_and_runs_on_both_databases() -> None:
    found = recipes()
    assert COOKBOOK.read_text().count("```sql") == len(found), "an sql block has no recipe tag"
    by_name: dict[str, list[str]] = defaultdict(list)
    for recipe in found:
        by_name[recipe.name].append(recipe.dialect)
    for name, dialects in by_name.items():
        assert sorted(dialects) in (["both"], ["mysql", "sqlite"]), (name, dialects)
    assert set(by_name) == set(ANSWERS)


def test_recipes_give_the_python_answers(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    data = import_sample(engine, settings, tmp_path / "export")
    # The per-person recipes must show an identity whose person is another one.
    assert data.users[PERSON][1] is not None
    mine = [r for r in recipes() if r.dialect in ("both", dialect_of(engine))]
    assert {r.name for r in mine} == set(ANSWERS)
    # The sample spans enough weeks, people and steps for the answers to mean something.
    assert len(weekly_retention(data)) > 20 and max(r[1] for r in weekly_retention(data)) >= 3
    visitors, signed_up = visit_to_signup_within_7_days(data)[0]
    assert 0 < signed_up < visitors
    assert len(what_did_this_person_do(data)) > 10 and len(person_profile(data)) > 3
    wrong = []
    for recipe in mine:
        want = ANSWERS[recipe.name](data)
        assert want, f"{recipe.name}: the sample gives no answer"
        got = run(engine, recipe.sql)
        if got != want:
            diff = [(i, g, w) for i, (g, w) in enumerate(zip(got, want, strict=False)) if g != w]
            wrong.append(f"{recipe.name}: {len(got)} rows, wanted {len(want)}; first: {diff[:2]}")
    assert not wrong, "\n".join(wrong)


def test_views_name_every_row(engine: Engine, settings: Settings, tmp_path: Path) -> None:
    data = import_sample(engine, settings, tmp_path / "export")
    names = {e.id: e.name for e in data.events}
    canonical_name = {id_: name for name, (id_, _) in data.users.items()}
    with engine.connect() as conn:
        events = conn.exec_driver_sql(
            "SELECT id, t, event, person, identity, user_id FROM named_events"
        ).all()
        props = conn.exec_driver_sql(
            "SELECT id, t, property, value, person, identity, user_id, event_id, event "
            "FROM named_properties"
        ).all()
        users = conn.exec_driver_sql("SELECT id, name, person_id, person FROM named_users").all()
    assert sorted((r[0], plain(r[1]), *r[2:]) for r in events) == sorted(
        (e.id, ts(e.t), e.name, e.person, e.identity, e.person_id) for e in data.events
    )
    assert sorted((r[0], plain(r[1]), *r[2:]) for r in props) == sorted(
        (p.id, ts(p.t), p.key, p.value, p.person, p.identity, p.person_id, p.event_id)
        + (names[p.event_id] if p.event_id is not None else None,)
        for p in data.props
    )
    assert sorted(tuple(r) for r in users) == sorted(
        (id_, name, c or id_, canonical_name[c or id_]) for name, (id_, c) in data.users.items()
    )
    assert len(events) > 2_000 and any(r[7] is None for r in props)
