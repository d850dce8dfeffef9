"""kmdb.reports.revenue: KM's Revenue report against an independent computation from the contract."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from kmdb import reports
from kmdb.settings import Settings
from tests import reports_oracle as oracle
from tests.helpers import REPORT_RANGES, imported_world


@pytest.mark.parametrize("seed", [5, 6])
def test_revenue_matches_the_contract(
    engine: Engine, settings: Settings, tmp_path: Path, seed: int
) -> None:
    world = imported_world(engine, settings, tmp_path, seed)
    for from_, to in REPORT_RANGES:
        for period in ("day", "week", "month"):
            for churn in (1, 7, 30):
                want = oracle.revenue(world, "amount", period, churn, from_=from_, to=to)
                got = reports.revenue(
                    engine, property="amount", period=period, churn_days=churn, from_=from_, to=to
                )
                assert got == want, (period, churn, from_, to)
    whole = reports.revenue(engine, property="amount", churn_days=7)
    assert whole["total"]["not_numbers"] > 0
    assert any(p["refunds"] != "0.00" for p in whole["periods"])
    assert any(p["churned"] for p in whole["periods"])
