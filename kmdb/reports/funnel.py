"""KM's Funnel: how many people went through a series of events, in order."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine

from kmdb.errors import ReportError
from kmdb.reports.common import (
    DateLike,
    Range,
    check_choice,
    engine_for,
    find_events,
    find_property,
    joined,
    make_range,
    person_events,
    person_values,
    ratio,
)

MODES = ("strict", "skips")
ATTRIBUTIONS = ("first", "last", "first-in-range", "last-in-range", "at-entry")


def match(rows: Sequence[tuple[int, int]], steps: Sequence[int], skips: bool) -> list[bool]:
    """Which steps a person's (t, n) rows (sorted by t) reach; all False if they did not enter."""
    reached = [False] * len(steps)
    first = next((i for i, (_, n) in enumerate(rows) if n == steps[0]), None)
    if first is None:
        return reached
    times = [t for t, _ in rows]
    used = {first}
    reached[0] = True
    low = bisect_left(times, rows[first][0])
    for j in range(1, len(steps)):
        found = next(
            (i for i in range(low, len(rows)) if rows[i][1] == steps[j] and i not in used), None
        )
        if found is None:
            if skips:
                continue
            break
        used.add(found)
        reached[j] = True
        low = bisect_left(times, rows[found][0])
    return reached


def attribute(
    values: Sequence[tuple[int, str]], attribution: str, within: Range, entry: int
) -> str | None:
    """The one value of a person's (t, value) rows that the attribution picks, or None."""
    if attribution in ("first-in-range", "last-in-range"):
        values = [v for v in values if v[0] in within]
    elif attribution == "at-entry":
        values = [v for v in values if v[0] <= entry]
    if not values:
        return None
    # Ties on time go to the lower value first, so the earliest is the smallest (t, value).
    return (min if attribution.startswith("first") else max)(values)[1]


def funnel(
    database: Engine | str,
    steps: Sequence[str],
    *,
    mode: str = "strict",
    by: str | None = None,
    attribution: str = "first",
    from_: DateLike = None,
    to: DateLike = None,
) -> dict[str, Any]:
    """The funnel of steps as the contract's JSON object (plain dicts and lists)."""
    steps = list(steps)
    if len(steps) < 2:
        raise ReportError("A funnel needs at least two steps.")
    check_choice(mode, MODES, "--mode")
    check_choice(attribution, ATTRIBUTIONS, "--attribution")
    within = make_range(from_, to)
    engine = engine_for(database)
    ids, missing = find_events(engine, steps)
    key = None
    if by is not None:
        key = find_property(engine, by)
        if key is None:
            missing.append(by)
    counts: dict[str | None, list[int]] = {}
    if not missing:
        step_ids = [ids[name] for name in steps]
        people = person_events(engine, ids.values(), within.start, within.end)
        values = person_values(engine, key, None, None) if key is not None else iter(())
        skips = mode == "skips"
        for _, rows, props in joined(people, values):
            reached = match(rows, step_ids, skips)
            if not reached[0]:
                continue
            value = None
            if key is not None:
                entry = next(t for t, n in rows if n == step_ids[0])
                value = attribute(props, attribution, within, entry)
            total = counts.setdefault(value, [0] * len(steps))
            for j, hit in enumerate(reached):
                total[j] += hit
    if by is None and not counts:
        counts[None] = [0] * len(steps)
    order = sorted(counts.items(), key=lambda kv: (-kv[1][0], kv[0] is None, kv[0] or ""))
    report: dict[str, Any] = {
        "report": "funnel",
        "steps": steps,
        "mode": mode,
        "segments": [_segment(value, people) for value, people in order],
    }
    if missing:
        report["missing"] = missing
    return report


def _segment(value: str | None, people: list[int]) -> dict[str, Any]:
    first = people[0]
    return {
        "value": value,
        "people": people,
        "from_previous": [ratio(first, first)]
        + [ratio(people[j], people[j - 1]) for j in range(1, len(people))],
        "overall": [ratio(p, first) for p in people],
    }
