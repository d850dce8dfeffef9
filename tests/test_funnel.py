"""kmdb.reports.funnel: KM's Funnel report against an independent computation from the contract."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from kmdb import reports
from kmdb.settings import Settings
from tests import reports_oracle as oracle
from tests.helpers import REPORT_RANGES, imported_world


@pytest.mark.parametrize("seed", [1, 2])
def test_funnel_matches_the_contract(
    engine: Engine, settings: Settings, tmp_path: Path, seed: int
) -> None:
    world = imported_world(engine, settings, tmp_path, seed)
    cases = [
        (["a", "b"], {}),
        (["a", "b", "c"], {}),
        (["a", "b", "c", "d"], {"skips": True}),
        (["b", "a", "b", "a"], {}),
        (["a", "a", "a"], {}),
        (["c", "d", "a"], {"skips": True}),
        (["a", "b", "c"], {"by": "variant", "attribution": "first"}),
        (["a", "c"], {"by": "variant", "attribution": "last"}),
        (["a", "b"], {"by": "variant", "attribution": "first-in-range"}),
        (["d", "b"], {"by": "variant", "attribution": "last-in-range", "skips": True}),
        (["a", "b", "d"], {"by": "variant", "attribution": "at-entry"}),
        (["a", "b"], {"by": "amount", "attribution": "at-entry"}),
    ]
    deep = 0
    for from_, to in REPORT_RANGES:
        for steps, options in cases:
            want = oracle.funnel(world, steps, from_=from_, to=to, **options)
            got = reports.funnel(
                engine,
                steps,
                mode="skips" if options.get("skips") else "strict",
                by=options.get("by"),
                attribution=options.get("attribution", "first"),
                from_=from_,
                to=to,
            )
            assert got == want, (steps, options, from_, to)
            deep += sum(s["people"][-1] for s in want["segments"])
    assert deep > 0
