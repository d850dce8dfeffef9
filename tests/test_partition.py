from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import create_engine

from kmdb.errors import PartitionError
from kmdb.load.partition import MAX_PARTITIONS, boundaries, plan

D = dt.date


def test_boundaries_run_to_the_first_one_after_max() -> None:
    found = boundaries(D(2014, 1, 1), D(2014, 3, 1), 7)
    assert len(found) == 9
    assert found[0] == D(2014, 1, 8)
    assert found[-1] == D(2014, 3, 5)


def test_a_max_on_a_boundary_still_gets_a_range_of_its_own() -> None:
    assert boundaries(D(2014, 1, 1), D(2014, 1, 8), 7)[-1] == D(2014, 1, 15)


def test_replanning_goes_on_from_the_last_boundary_and_ignores_min() -> None:
    first = plan([], D(2014, 1, 1), D(2014, 3, 1), 7, "events")
    assert first.total == 10
    again = plan(list(first.new), D(2000, 1, 1), D(2014, 4, 1), 7, "events")
    assert again.total == 14
    assert again.new[0] == D(2014, 3, 12)
    same = plan(list(first.new), None, D(2014, 3, 1), 7, "events")
    assert same.new == ()


def test_a_plan_beyond_the_limit_names_the_limit_and_a_fitting_days() -> None:
    with pytest.raises(PartitionError, match=f"limit of {MAX_PARTITIONS}.*--days 5 "):
        plan([], D(2014, 1, 1), D(2114, 1, 1), 1, "events")
    fitting = plan([], D(2014, 1, 1), D(2114, 1, 1), 5, "events")
    assert fitting.total <= MAX_PARTITIONS
    with pytest.raises(PartitionError):
        plan([], D(2014, 1, 1), D(2114, 1, 1), 4, "events")


def test_first_partitioning_needs_a_min_date() -> None:
    with pytest.raises(PartitionError, match="KMDB_MIN_DATE"):
        plan([], None, D(2014, 3, 1), 7, "events")


def test_partitioning_refuses_sqlite() -> None:
    from kmdb.load.partition import partition

    with pytest.raises(PartitionError, match="MySQL feature"):
        partition(create_engine("sqlite://"), D(2014, 1, 1), D(2014, 3, 1), 7)
