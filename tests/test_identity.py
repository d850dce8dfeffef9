"""kmdb.transform.identity: the alias rules and canonical identities."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from kmdb.settings import Settings
from tests.helpers import line, run_import, write_export
from tests.model import dump


def test_alias_rules(engine: Engine, settings: Settings, tmp_path: Path) -> None:
    folder = write_export(
        tmp_path / "export",
        {
            1: [
                line(_p="12", _p2="34", _t=10),  # two accounts: ignored
                line(_p="a", _p2="a", _t=11),  # itself: ignored
                line(_p="b", _p2="a", _t=50),  # stored as (a, b)
                line(_p="a", _p2="b", _t=20),  # same pair, earlier
                line(_p="x", _p2=7, _t=30),  # numeric first
                line(_p="007", _p2="x", _t=31),  # 007 and 7 tie by value: lower text wins
                line(_n="e", _p="x", _t=40),
                line(_n="e", _p="12", _t=41),
                line(_n="e", _p="34", _t=42),
                line(_n="e", _p="b", _t=43),
            ]
        },
    )
    run_import(engine, folder, settings)
    result = dump(engine)
    assert result.aliases == {
        ("a", "b", "1970-01-01 00:00:20"),
        ("7", "x", "1970-01-01 00:00:30"),
        ("007", "x", "1970-01-01 00:00:31"),
    }
    assert sorted(e[2] for e in result.events) == ["007", "12", "34", "a"]
