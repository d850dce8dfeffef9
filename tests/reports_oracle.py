"""Generated KM exports and a slow, plain computation of each report from the contract's words.

Nothing here comes from kmdb.reports: the oracle works on the lists of events and
property values each person has, as the generator wrote them, so that a report read
back from the imported database can be compared with it number by number.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from statistics import NormalDist

import orjson

DAY = 86_400
BASE = 1_362_096_000  # 2013-03-01 00:00:00 UTC
EVENTS = ("a", "b", "c", "d")
VARIANTS = ("x", "y", "z", "w", "v\x1fw\x1ex")
AMOUNTS = (
    "10.50",
    " 5 ",
    "-3.25",
    "abc",
    "1.",
    "+4",
    12,
    2.5,
    "0",
    "-0.00",
    "7",
    "0.005",
    "-0.015",
    " 99.999  ",
    "1e3",
    "",
    "5\x1f6",
)


@dataclass
class World:
    """What a generated export holds, per true person (not per identity)."""

    events: list[tuple[int, str, int]] = field(default_factory=list)  # (person, name, t)
    values: list[tuple[int, str, str, int]] = field(default_factory=list)  # (person, key, value, t)
    lines: list[bytes] = field(default_factory=list)


def stored(value: object) -> str:
    """A property value as the import stores it."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def generate(seed: int, people: int = 40) -> World:
    """An export with ties, repeats, skips, refunds, odd amounts and people merged by aliases."""
    rng = random.Random(seed)
    world = World()
    for person in range(people):
        identities = [f"anon-{person}-{k}" for k in range(rng.randint(1, 3))]
        if rng.random() < 0.6:
            identities.append(str(1000 + person))
        # Link every identity to the first one; the alias may come after the events.
        for other in identities[1:]:
            world.lines.append(
                orjson.dumps(
                    {"_p": identities[0], "_p2": other, "_t": BASE + rng.randint(0, 80 * DAY)}
                )
            )
        pool = [BASE + rng.randint(0, 75 * 24) * 3600 for _ in range(6)]

        def when(pool: list[int] = pool) -> int:
            if rng.random() < 0.5:
                return rng.choice(pool)
            return BASE + rng.randint(-5 * DAY, 80 * DAY)

        for _ in range(rng.randint(0, 14)):
            name, t = rng.choice(EVENTS), when()
            record: dict[str, object] = {"_n": name, "_p": rng.choice(identities), "_t": t}
            if rng.random() < 0.3:
                record["variant"] = rng.choice(VARIANTS)
            if rng.random() < 0.3:
                record["amount"] = rng.choice(AMOUNTS)
            world.events.append((person, name, t))
            for key in ("variant", "amount"):
                if key in record:
                    world.values.append((person, key, stored(record[key]), t))
            world.lines.append(orjson.dumps(record))
        for _ in range(rng.randint(0, 6)):
            t = when()
            for _ in range(rng.choice((1, 1, 2))):  # two values at the same second
                key = rng.choice(("variant", "amount", "amount"))
                value = rng.choice(VARIANTS if key == "variant" else AMOUNTS)
                world.values.append((person, key, stored(value), t))
                world.lines.append(
                    orjson.dumps({"_p": rng.choice(identities), "_t": t, key: value})
                )
        if rng.random() < 0.3:  # a subscriber: payments exactly 1, 7 or 30 days apart
            t = when()
            for gap in rng.choices((0, 1, 7, 30, 31), k=4):
                t += gap * DAY
                world.values.append((person, "amount", "9.99", t))
                world.lines.append(
                    orjson.dumps({"_p": rng.choice(identities), "_t": t, "amount": "9.99"})
                )
    rng.shuffle(world.lines)
    return world


def write(world: World, folder: Path, per_file: int = 150) -> Path:
    """The world's lines as revisions/N.json files."""
    (folder / "revisions").mkdir(parents=True, exist_ok=True)
    for number, first in enumerate(range(0, len(world.lines), per_file), start=1):
        chunk = world.lines[first : first + per_file]
        (folder / "revisions" / f"{number}.json").write_bytes(b"".join(x + b"\n" for x in chunk))
    return folder


# --- The oracle -----------------------------------------------------------------


def bounds(from_: str | None, to: str | None) -> tuple[float, float]:
    lo = -math.inf if from_ is None else _seconds(dt.date.fromisoformat(from_))
    hi = math.inf if to is None else _seconds(dt.date.fromisoformat(to)) + DAY
    return lo, hi


def _seconds(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


def _date(t: float) -> dt.date:
    return dt.datetime.fromtimestamp(t, dt.UTC).date()


def period_of(kind: str, day: dt.date, origin: dt.date, from_given: bool) -> dt.date:
    if kind == "day":
        return day
    if kind == "week":
        return origin + dt.timedelta(days=7 * ((day - origin).days // 7))
    if from_given and (day.year, day.month) == (origin.year, origin.month):
        return origin
    return day.replace(day=1)


def next_period(kind: str, start: dt.date) -> dt.date:
    if kind == "day":
        return start + dt.timedelta(days=1)
    if kind == "week":
        return start + dt.timedelta(days=7)
    return (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def share(a: int, b: int) -> float:
    return round(a / b, 6) if b else 0.0


def occurrences(world: World, person: int) -> list[tuple[int, int, str]]:
    """(t, row number, name) of a person's events, in time order."""
    return sorted((t, i, n) for i, (p, n, t) in enumerate(world.events) if p == person)


def values_of(world: World, person: int, key: str) -> list[tuple[int, str]]:
    """(t, value) of a person's values of key; at a tie in time the lower value first."""
    return sorted((t, v) for p, k, v, t in world.values if p == person and k == key)


def persons(world: World) -> list[int]:
    return sorted({p for p, *_ in world.events} | {p for p, *_ in world.values})


def funnel(
    world: World, steps, skips=False, by=None, attribution="first", from_=None, to=None
) -> dict:
    lo, hi = bounds(from_, to)
    segments: dict = {}
    for person in persons(world):
        occ = occurrences(world, person)
        entries = [o for o in occ if o[2] == steps[0] and lo <= o[0] < hi]
        if not entries:
            continue
        match = entries[0]
        used, reached = {match[1]}, [1] + [0] * (len(steps) - 1)
        for j in range(1, len(steps)):
            later = [
                o for o in occ if o[2] == steps[j] and match[0] <= o[0] < hi and o[1] not in used
            ]
            if later:
                match = later[0]
                used.add(match[1])
                reached[j] = 1
            elif not skips:
                break
        value = None
        if by is not None:
            vals = values_of(world, person, by)
            if attribution.endswith("in-range"):
                vals = [x for x in vals if lo <= x[0] < hi]
            if attribution == "at-entry":
                vals = [x for x in vals if x[0] <= entries[0][0]]
            if vals:
                value = vals[0][1] if attribution.startswith("first") else vals[-1][1]
        counts = segments.setdefault(value, [0] * len(steps))
        for j, r in enumerate(reached):
            counts[j] += r
    if by is None and not segments:
        segments[None] = [0] * len(steps)
    ordered = sorted(segments, key=lambda v: (-segments[v][0], v is None, v or ""))
    return {
        "report": "funnel",
        "steps": list(steps),
        "mode": "skips" if skips else "strict",
        "segments": [
            {
                "value": v,
                "people": segments[v],
                "from_previous": [share(segments[v][0], segments[v][0])]
                + [share(segments[v][j], segments[v][j - 1]) for j in range(1, len(steps))],
                "overall": [share(n, segments[v][0]) for n in segments[v]],
            }
            for v in ordered
        ],
    }


def cohort(
    world: World,
    first,
    return_,
    period="week",
    bucket="week",
    buckets=8,
    count="first",
    from_=None,
    to=None,
) -> dict:
    lo, hi = bounds(from_, to)
    length = DAY if bucket == "day" else 7 * DAY
    members = []
    for person in persons(world):
        occ = occurrences(world, person)
        anchors = [t for t, _, n in occ if n == first and lo <= t < hi]
        if not anchors:
            continue
        a = anchors[0]
        ks = sorted({(t - a) // length for t, _, n in occ if n == return_ and t > a})
        ks = [k for k in ks if k < buckets]
        members.append((a, ks[:1] if count == "first" else ks))
    if not members:
        return _cohort_json(first, return_, period, bucket, count, [])
    origin = dt.date.fromisoformat(from_) if from_ else _date(min(a for a, _ in members))
    sizes: dict = defaultdict(int)
    returned: dict = defaultdict(lambda: [0] * buckets)
    for a, ks in members:
        start = period_of(period, _date(a), origin, from_ is not None)
        sizes[start] += 1
        for k in ks:
            returned[start][k] += 1
    cohorts = [
        {"period": start.isoformat(), "people": sizes[start], "returned": returned[start]}
        for start in sorted(sizes)
    ]
    return _cohort_json(first, return_, period, bucket, count, cohorts)


def _cohort_json(first, return_, period, bucket, count, cohorts) -> dict:
    return {
        "report": "cohort",
        "first": first,
        "return": return_,
        "period": period,
        "bucket": bucket,
        "count": count,
        "cohorts": cohorts,
    }


def as_amount(value: str) -> Decimal | None:
    body = value.strip(" ")
    if not body or body != value.lstrip(" ").rstrip(" "):
        return None
    digits = body[1:] if body.startswith("-") else body
    whole, dot, cents = digits.partition(".")
    ok = set("0123456789")
    if not whole or not set(whole) <= ok or (dot and (not cents or not set(cents) <= ok)):
        return None
    return Decimal(body)


def cents(x: Decimal) -> str:
    text = str(x.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
    return "0.00" if text == "-0.00" else text


def revenue(
    world: World, prop="billing amount", period="month", churn_days=30, from_=None, to=None
):
    lo, hi = bounds(from_, to)
    rows = [(p, as_amount(v), t) for p, k, v, t in world.values if k == prop]
    in_range = [(p, a, t) for p, a, t in rows if lo <= t < hi]
    amounts = [(p, a, t) for p, a, t in in_range if a is not None]
    result = {"report": "revenue", "property": prop, "period": period}
    if from_ is None and not amounts:
        listed: list[dt.date] = []
        origin = None
    else:
        origin = dt.date.fromisoformat(from_) if from_ else _date(min(t for _, _, t in amounts))
        last = (
            dt.date.fromisoformat(to)
            if to
            else (_date(max(t for _, _, t in amounts)) if amounts else None)
        )
        listed = []
        if last is not None:
            start = period_of(period, origin, origin, from_ is not None)
            while start <= last:
                listed.append(start)
                start = next_period(period, start)

    def where(t: int) -> dt.date:
        return period_of(period, _date(t), origin, from_ is not None)

    stats = {s: [Decimal(0), Decimal(0), set(), set(), set()] for s in listed}
    for p, a, t in amounts:
        s = stats[where(t)]
        s[0] += a
        if a < 0:
            s[1] += a
        if a > 0:
            s[2].add(p)
    positives = defaultdict(list)
    for p, a, t in rows:
        if a is not None and a > 0:
            positives[p].append(t)
    for p, times in positives.items():
        times.sort()
        if lo <= times[0] < hi and where(times[0]) in stats:
            stats[where(times[0])][3].add(p)
        for tp in times:
            c = tp + churn_days * DAY
            if not any(tp < u <= c for u in times) and lo <= c < hi and where(c) in stats:
                stats[where(c)][4].add(p)
    total = sum((a for _, a, _ in amounts), Decimal(0))
    paying = len({p for p, a, _ in amounts if a > 0})
    result["periods"] = [
        {
            "period": s.isoformat(),
            "revenue": cents(stats[s][0]),
            "refunds": cents(stats[s][1]),
            "paying": len(stats[s][2]),
            "new_paying": len(stats[s][3]),
            "churned": len(stats[s][4]),
        }
        for s in listed
    ]
    result["total"] = {
        "revenue": cents(total),
        "paying": paying,
        "revenue_per_paying": cents(total / paying) if paying else "0.00",
        "not_numbers": len(in_range) - len(amounts),
    }
    return result


def abtest(world: World, prop, goal, baseline=None, from_=None, to=None) -> dict:
    lo, hi = bounds(from_, to)
    tally: dict = {}
    for person in persons(world):
        vals = values_of(world, person, prop)
        if not vals or not lo <= vals[0][0] < hi:
            continue
        entry, variant = vals[0]
        did = any(n == goal and entry <= t < hi for t, _, n in occurrences(world, person))
        counts = tally.setdefault(variant, [0, 0])
        counts[0] += 1
        counts[1] += did
    order = sorted(tally, key=lambda v: (-tally[v][0], v))
    if baseline is None and order:
        baseline = order[0]
    variants = []
    for v in order:
        n, c = tally[v]
        sure = None
        if v != baseline:
            nb, cb = tally[baseline]
            pb, pv = cb / nb, c / n
            root = math.sqrt(pb * (1 - pb) / nb + pv * (1 - pv) / n)
            if root == 0:
                sure = 0.5 if pv == pb else float(pv > pb)
            else:
                sure = NormalDist().cdf((pv - pb) / root)
        variants.append(
            {
                "variant": v,
                "people": n,
                "converted": c,
                "rate": share(c, n),
                "certainty": None if sure is None else round(sure, 6),
                "winner": sure is not None and sure > 0.95,
            }
        )
    return {
        "report": "abtest",
        "property": prop,
        "goal": goal,
        "baseline": baseline,
        "variants": variants,
    }
