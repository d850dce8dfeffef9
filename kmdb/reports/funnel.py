"""KM's Funnel: how many people went through a series of events, in order."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine

from kmdb.errors import ReportError
from kmdb.reports.common import DateLike, Range, check_choice, engine_for, make_range, ratio
from kmdb.reports.stream import (
    Times,
    find_events,
    find_property,
    joined,
    person_events,
    person_values,
)

MODES = ("strict", "skips")
ATTRIBUTIONS = ("first", "last", "first-in-range", "last-in-range", "at-entry")


def match(times: Times, steps: Sequence[int], skips: bool) -> list[int | None]:
    """The time of each step's match for a person, None where there is none.

    steps[j] is the id of step j's name; a person who did not enter matches nothing.
    """
    matches: list[int | None] = [None] * len(steps)
    codes = times.codes
    start, end, base = times.span(steps[0])
    if start == end:
        return matches
    # Per name: [its first time no earlier step matched, its end, its base]. A step
    # matches its name's earliest unmatched time at or after the previous match; as
    # those bounds only grow, its earlier times are all matched or too early, so
    # the next unmatched one is the first at or after the bound past those.
    spans = {steps[0]: [start + 1, end, base]}
    previous = matches[0] = codes[start] - base
    for j in range(1, len(steps)):
        span = spans.get(steps[j])
        if span is None:
            span = spans[steps[j]] = list(times.span(steps[j]))
        first, end, base = span
        i = bisect_left(codes, previous + base, first, end)
        if i == end:
            if skips:
                continue
            break
        span[0] = i + 1
        previous = matches[j] = codes[i] - base
    return matches


def _time(row: tuple[int, str]) -> int:
    return row[0]


def attribute(
    values: Sequence[tuple[int, str]], attribution: str, within: Range, entry: int
) -> str | None:
    """The one value of a person's (t, value) rows, by time then value, that the attribution picks."""
    # Ties on time go to the lower value first, so the earliest is the first row.
    low, high = 0, len(values)
    if attribution in ("first-in-range", "last-in-range"):
        if within.start is not None:
            low = bisect_left(values, within.start, key=_time)
        if within.end is not None:
            high = bisect_left(values, within.end, low, key=_time)
    elif attribution == "at-entry":
        high = bisect_right(values, entry, key=_time)
    if low >= high:
        return None
    return values[low if attribution.startswith("first") else high - 1][1]


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
        people = person_events(engine, step_ids, within.start, within.end)
        values = person_values(engine, key, None, None) if key is not None else iter(())
        skips = mode == "skips"
        for _, times, props in joined(people, values):
            matches = match(times, step_ids, skips)
            entry = matches[0]
            if entry is None:
                continue
            value = None if key is None else attribute(props, attribution, within, entry)
            total = counts.setdefault(value, [0] * len(steps))
            for j, matched in enumerate(matches):
                if matched is not None:
                    total[j] += 1
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
