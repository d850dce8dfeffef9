"""kmdb.reports.cohort: KM's Cohort report against an independent computation from the contract."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from kmdb import reports
from kmdb.settings import Settings
from tests import reports_oracle as oracle
from tests.helpers import REPORT_RANGES, imported_world


@pytest.mark.parametrize("seed", [3, 4])
def test_cohort_matches_the_contract(
    engine: Engine, settings: Settings, tmp_path: Path, seed: int
) -> None:
    world = imported_world(engine, settings, tmp_path, seed)
    cases = [
        ("a", "b", {}),
        ("a", "a", {"period": "day", "bucket": "day", "buckets": 10}),
        ("b", "c", {"period": "month", "bucket": "day", "buckets": 30, "count": "every"}),
        ("c", "a", {"period": "week", "bucket": "week", "buckets": 3, "count": "every"}),
        ("d", "d", {"period": "month", "bucket": "week", "buckets": 1}),
    ]
    returns = 0
    for from_, to in REPORT_RANGES:
        for first, back, options in cases:
            want = oracle.cohort(world, first, back, from_=from_, to=to, **options)
            got = reports.cohort(engine, first, back, from_=from_, to=to, **options)
            assert got == want, (first, back, options, from_, to)
            returns += sum(sum(c["returned"]) for c in want["cohorts"])
    assert returns > 0
