"""KM's A/B test report: each variant's conversion rate and how sure it beats the baseline."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import Engine

from kmdb.errors import ReportError
from kmdb.reports.common import DateLike, engine_for, make_range, ratio
from kmdb.reports.stream import find_events, find_property, joined, person_events, person_values

WINNING = 0.95


def certainty(p_base: float, n_base: int, p: float, n: int) -> float:
    """Φ of the difference of two rates over its standard error (0.5, 1 or 0 when that is 0)."""
    root = math.sqrt(p_base * (1 - p_base) / n_base + p * (1 - p) / n)
    if root == 0:
        return 0.5 if p == p_base else (1.0 if p > p_base else 0.0)
    return 0.5 * math.erfc(-(p - p_base) / root / math.sqrt(2))


def abtest(
    database: Engine | str,
    *,
    property: str,  # noqa: A002 - the contract's own word
    goal: str,
    baseline: str | None = None,
    from_: DateLike = None,
    to: DateLike = None,
) -> dict[str, Any]:
    """Each variant of the experiment `property` and its rate of doing `goal`, as the contract's JSON."""
    within = make_range(from_, to)
    engine = engine_for(database)
    key = find_property(engine, property)
    ids, missing = find_events(engine, [goal])
    if key is None:
        missing.insert(0, property)
    tally: dict[str, list[int]] = {}
    if not missing and key is not None:  # key is None only when missing names it
        # A person's earliest value ever decides; one before the range keeps them out.
        values = person_values(engine, key, None, within.end)
        goals = person_events(engine, ids.values(), within.start, within.end)
        for _, rows, done in joined(values, goals, None):
            entry, variant = rows[0]
            if entry not in within:
                continue
            counts = tally.setdefault(variant, [0, 0])
            counts[0] += 1
            if done is not None:
                _, end, base = done.span(ids[goal])
                counts[1] += done.codes[end - 1] - base >= entry
    order = sorted(tally.items(), key=lambda kv: (-kv[1][0], kv[0]))
    if baseline is None:
        baseline = order[0][0] if order else None
    elif order and baseline not in tally:
        raise ReportError(
            f"--baseline {baseline!r} is not a variant of {property!r}; "
            f"its variants are {', '.join(repr(v) for v, _ in order)}."
        )
    base = tally.get(baseline) if baseline is not None else None
    variants = []
    for variant, (people, converted) in order:
        sure = None
        if base is not None and variant != baseline:
            sure = certainty(base[1] / base[0], base[0], converted / people, people)
        variants.append(
            {
                "variant": variant,
                "people": people,
                "converted": converted,
                "rate": ratio(converted, people),
                "certainty": None if sure is None else round(sure, 6),
                "winner": sure is not None and sure > WINNING,
            }
        )
    report: dict[str, Any] = {
        "report": "abtest",
        "property": property,
        "goal": goal,
        "baseline": baseline,
        "variants": variants,
    }
    if missing:
        report["missing"] = missing
    return report
