"""KM's Cohort report: of the people who first did an event in a period, who came back when."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any

from sqlalchemy import Engine

from kmdb.errors import ReportError
from kmdb.reports.common import (
    BUCKETS,
    DAY,
    DateLike,
    Periods,
    check_choice,
    day_name,
    day_number,
    engine_for,
    make_range,
)
from kmdb.reports.stream import find_events, person_events

COUNTS = ("first", "every")


def cohort(
    database: Engine | str,
    first: str,
    return_: str,
    *,
    period: str = "week",
    bucket: str = "week",
    buckets: int = 8,
    count: str = "first",
    from_: DateLike = None,
    to: DateLike = None,
) -> dict[str, Any]:
    """The retention of people who did `first`, by cohort, as the contract's JSON object."""
    check_choice(period, ("day", "week", "month"), "--period")
    check_choice(bucket, tuple(BUCKETS), "--bucket")
    check_choice(count, COUNTS, "--count")
    if not isinstance(buckets, int) or buckets < 1:
        raise ReportError(f"--buckets {buckets!r} must be a whole number of at least 1.")
    within = make_range(from_, to)
    engine = engine_for(database)
    ids, missing = find_events(engine, [first, return_])
    length = BUCKETS[bucket]
    # Per day of anchor: [people, returned in bucket 0, 1, ...]; days are few, people many.
    days: dict[int, list[int]] = {}
    if not missing:
        end = within.end
        # Returns count at any time after the anchor, but only within N buckets of it.
        reach = None if end is None else end + buckets * length
        for _, times in person_events(engine, ids.values(), within.start, reach):
            codes = times.codes
            start, stop, base = times.span(ids[first])
            if start == stop or (end is not None and codes[start] - base >= end):
                continue
            anchor = codes[start] - base
            # The returns after the anchor and before the end of its last bucket, as
            # codes: each is `at` more than its time.
            start, stop, at = times.span(ids[return_])
            low = bisect_right(codes, at + anchor, start, stop)
            high = bisect_left(codes, at + anchor + buckets * length, low, stop)
            at += anchor
            if count == "first":
                hits = [(codes[low] - at) // length] if low < high else []
            else:
                hits = sorted({(c - at) // length for c in codes[low:high]})
            row = days.setdefault(anchor // DAY, [0] * (buckets + 1))
            row[0] += 1
            for k in hits:
                row[k + 1] += 1
    cohorts: dict[int, list[int]] = {}
    if days:
        origin = day_number(within.first) if within.first is not None else min(days)
        periods = Periods(period, origin, within.first is not None)
        for day, row in days.items():
            total = cohorts.setdefault(periods.of(day), [0] * (buckets + 1))
            for i, n in enumerate(row):
                total[i] += n
    report: dict[str, Any] = {
        "report": "cohort",
        "first": first,
        "return": return_,
        "period": period,
        "bucket": bucket,
        "count": count,
        "cohorts": [
            {"period": day_name(start), "people": row[0], "returned": row[1:]}
            for start, row in sorted(cohorts.items())
        ],
    }
    if missing:
        report["missing"] = missing
    return report
