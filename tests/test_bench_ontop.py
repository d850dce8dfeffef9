"""kmdb.bench.ontop: the one-more-revision table as printed, and its check of idle settles.

The table measured end to end is in tests/test_bench_scale.py."""

from __future__ import annotations

import io

from kmdb.bench.ontop import NOTHING, Row, Table, check_settles, print_table, stages
from kmdb.bench.runs import Run


def _table() -> Table:
    table = Table("127.0.0.1:3306", 3_000_000, 50, 60_000, first_import=60.0, partitioning=30.0)
    table.rows = [
        Row("not partitioned", 20.0, 2.5, 2.1, NOTHING, 1.0, 10.5, 9.0),
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
    assert lines[7] == (
        "  on top, not partitioned: the settle before the import 1.0 s, the import jobs 10.5 s, "
        "the re-point of older rows beside them 9.0 s"
    )


def test_stages_are_the_settle_before_the_import_the_span_of_the_import_jobs_and_the_repoint() -> (
    None
):
    run = Run("W=2", 25.0, {})
    run.timeline = [
        (1.5, 1.7, "w1", "scan revision 51 of s3://b for aliases"),
        (1.7, 10.5, "w1", "settle people before the import"),
        (10.5, 25.0, "w1", "import revision 51, part 2 of 2 of s3://b"),
        (10.5, 16.0, "w2", "re-point older rows of the people the settle changed"),
        (16.0, 24.0, "w2", "import revision 51, part 1 of 2 of s3://b"),
        (25.0, 25.1, "w2", "settle people after the import"),
    ]
    before, imports, repoint = stages(run)
    assert round(before, 6) == 8.8
    assert round(imports, 6) == 14.5
    assert round(repoint, 6) == 5.5


def test_a_settle_that_changed_something_is_named() -> None:
    table = _table()
    assert check_settles([table]) == []
    table.rows[1].settled = "people_changed 3"
    assert check_settles([table]) == [
        "127.0.0.1:3306, kmdb-partition by 7 days: the settle after the import changed "
        "something: people_changed 3"
    ]
