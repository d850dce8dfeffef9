"""kmdb.load.parts: a revision file planned in parts of about KMDB_PART_SIZE bytes, once."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from kmdb.errors import SourceError
from kmdb.extract.local import LocalSource
from kmdb.load.database import create_schema
from kmdb.load.parts import part_plan, plan_parts, planned_parts
from kmdb.settings import Settings
from tests.helpers import write_export


def test_parts_are_alike_and_come_in_multiples_of_the_pools_workers() -> None:
    # A big file in five parts' worth: six parts of the same size for two workers.
    plan = part_plan(7, 5_000, 1_000, multiple=2)
    assert [p["first_byte"] for p in plan] == [0, 833, 1666, 2500, 3333, 4166]
    assert {p["revision"] for p in plan} == {7}
    assert [p["part"] for p in plan] == list(range(6))
    assert len(part_plan(7, 5_000, 1_000)) == 5
    # One part needs no partner; an empty file still has its part.
    assert len(part_plan(7, 1_000, 1_000, multiple=2)) == 1
    assert part_plan(7, 0, 1_000, multiple=2) == [{"revision": 7, "part": 0, "first_byte": 0}]


def test_a_plan_once_made_stays_whatever_the_settings_say_later(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    # The ids of the rows already imported depend on the plan.
    create_schema(engine)
    folder = write_export(tmp_path / "export", {3: [b'{"_n":"e","_p":"a","_t":1}'] * 100})
    source = LocalSource(str(folder))
    size = (folder / "revisions" / "3.json").stat().st_size
    first = plan_parts(engine, source, 3, settings.replace(part_size=size // 4 + 1))
    assert [p["first_byte"] for p in first] == [i * size // 4 for i in range(4)]
    again = plan_parts(engine, source, 3, settings.replace(part_size=10 * size))
    assert again == first
    assert planned_parts(engine, [3, 4]) == {3: first}


def test_a_revision_gone_from_the_source_cannot_be_planned(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    create_schema(engine)
    folder = write_export(tmp_path / "export", {1: [b"{}"]})
    with pytest.raises(SourceError, match=r"^Revision 2 is not in .*export any more\.$"):
        plan_parts(engine, LocalSource(str(folder)), 2, settings)
    assert planned_parts(engine, [2]) == {}
