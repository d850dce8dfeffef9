"""kmdb.reports.abtest: KM's A/B test report against an independent computation from the contract."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from kmdb import reports
from kmdb.settings import Settings
from tests import reports_oracle as oracle
from tests.helpers import REPORT_RANGES, imported_world, same_report


@pytest.mark.parametrize("seed", [7, 8])
def test_abtest_matches_the_contract(
    engine: Engine, settings: Settings, tmp_path: Path, seed: int
) -> None:
    world = imported_world(engine, settings, tmp_path, seed)
    for from_, to in REPORT_RANGES:
        for goal in ("a", "b", "d"):
            want = oracle.abtest(world, "variant", goal, from_=from_, to=to)
            got = reports.abtest(engine, property="variant", goal=goal, from_=from_, to=to)
            same_report(got, want)
            if len(want["variants"]) > 1:
                other = want["variants"][-1]["variant"]
                want = oracle.abtest(world, "variant", goal, baseline=other, from_=from_, to=to)
                got = reports.abtest(
                    engine, property="variant", goal=goal, baseline=other, from_=from_, to=to
                )
                same_report(got, want)
