"""kmdb.bench.ontop: the one-more-revision table as printed, and its check of idle settles.

The table measured end to end is in tests/test_bench_scale.py."""

from __future__ import annotations

import io

from kmdb.bench.ontop import NOTHING, Row, Table, check_settles, print_table


def _table() -> Table:
    table = Table("127.0.0.1:3306", 3_000_000, 50, 60_000, first_import=60.0, partitioning=30.0)
    table.rows = [
        Row("not partitioned", 20.0, 2.5, 2.1, NOTHING),
        Row("kmdb-partition by 7 days", 10.5, 2.625, 0.15, NOTHING),
    ]
    return table


def test_the_table_gives_each_database_its_times_ratio_and_idle_settle() -> None:
    out = io.StringIO()
    print_table(_table(), out)
    lines = out.getvalue().splitlines()
    assert lines[1] == (
        "One more revision of 60,000 lines on a database of 3,000,000 lines (50 revisions), "
        "against the same revision into an empty database"
    )
    assert lines[2] == "Server: 127.0.0.1:3306"
    assert lines[4].split() == ["not", "partitioned", "20.0", "2.5", "8.00x", "2.10"]
    assert lines[5].split()[-4:] == ["10.5", "2.6", "4.00x", "0.15"]
    assert "first import: 60.0 s (50,000 lines/s); kmdb-partition on it: 30.0 s" in lines[6]


def test_a_settle_that_changed_something_is_named() -> None:
    table = _table()
    assert check_settles([table]) == []
    table.rows[1].settled = "people_changed 3"
    assert check_settles([table]) == [
        "127.0.0.1:3306, kmdb-partition by 7 days: the settle after the import changed "
        "something: people_changed 3"
    ]
