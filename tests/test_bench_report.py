"""kmdb.bench.report: the tables the import benchmark prints, and its check of equal row counts."""

from __future__ import annotations

import io

from kmdb.bench.report import compare_counts, cpu_table, median_ratios, report, timelines
from kmdb.bench.runs import Run

COUNTS = {"events": 900, "properties": 2_000, "users": 50, "people": 40, "keys": 9, "aliases": 10}


def _run(
    seconds: float, baseline: float | None, round_: int, workers: int = 2, **counts: int
) -> Run:
    return Run(
        label=f"W={workers}",
        seconds=seconds,
        counts={**COUNTS, **counts},
        workers=workers,
        enqueue=0.5,
        rss_kib=[102_400, 51_200],
        stages={"parse": 1.0, "load": 2.0, "spill": 0.25},
        import_jobs=3.5,
        scan=0.5,
        settles=[0.2, 0.3],
        cpu={"server": 1.0, "workers": 2.0, "import": 0.5, "s3": 0.1},
        timeline=[(1.0, 2.0, "w-b", "settle"), (0.0, 1.0, "w-a", "scan")],
        baseline=baseline,
        round=round_,
    )


def _printed(write, *args) -> str:  # noqa: ANN001
    out = io.StringIO()
    write(*args, out)
    return out.getvalue()


def test_rounds_are_summed_up_by_their_median_ratio_to_their_own_reload() -> None:
    # Three rounds whose ratios are 2, 3 and 10: the median is 3, the mean would be 5.
    runs = [_run(4.0, 2.0, 1), _run(3.0, 1.0, 2), _run(30.0, 3.0, 3), _run(5.0, 1.0, 1, workers=1)]
    assert median_ratios(runs) == {1: [5.0], 2: [2.0, 3.0, 10.0]}
    text = _printed(report, runs, [], 2.0, 1_000)
    assert "W=2: median import/reload 3.00x over 3 rounds (from 2.00x to 10.00x)" in text
    assert "W=1: median import/reload 5.00x over 1 rounds" in text
    rows = [line.split() for line in text.splitlines() if line.startswith("    ")]
    assert [(row[0], row[1], row[5]) for row in rows[:4]] == [
        ("1", "2", "2.00x"),
        ("2", "2", "3.00x"),
        ("3", "2", "10.00x"),
        ("1", "1", "5.00x"),
    ]


def test_one_round_has_no_round_column_and_a_run_without_reload_no_ratio() -> None:
    text = _printed(report, [_run(4.0, None, 1)], [], None, 1_000)
    assert "round" not in text and "median" not in text
    row = next(line for line in text.splitlines() if line.startswith(" 2 "))
    # W, seconds, lines/s, events/s, ratio, target, ratio to the best bulk path, then the
    # workers' peak RSS in MB.
    assert row.split() == ["2", "4.0", "250", "225", "-", "1.3x", "-", "100,", "50"]


def test_a_run_is_compared_with_the_best_bulk_path_of_its_round_too() -> None:
    run = _run(4.0, 2.0, 1)
    run.best = 5.0
    text = _printed(report, [run], [], 2.0, 1_000)
    row = next(line for line in text.splitlines() if line.startswith(" 2 "))
    assert row.split()[4:7] == ["2.00x", "1.3x", "0.80x"]
    assert "best: the same rows loaded into the tables without secondary indexes" in text


def test_stages_beyond_the_known_ones_get_a_column_and_idle_time_is_what_jobs_left() -> None:
    text = _printed(report, [_run(4.0, 2.0, 1)], [], 2.0, 1_000)
    head = next(line for line in text.splitlines() if line.startswith(" W   download"))
    assert head.split()[1:7] == ["download", "parse", "identities", "rows", "load", "spill"]
    row = text.splitlines()[text.splitlines().index(head) + 1].split()
    # 2 workers x (4.0 s - 0.5 s enqueue) - (3.5 imports + 0.5 scan + 0.5 settles) = 2.5
    assert row[-1] == "2.5" and row[-3] == "0.2+0.3"


def test_inline_runs_are_compared_with_the_first_reload() -> None:
    inline = [Run(label="inline sqlite", seconds=1.0, counts=dict(COUNTS))]
    text = _printed(report, [], inline, 4.0, 1_000)
    assert "In-process import (kmdb-import --inline --source FOLDER)" in text
    assert text.splitlines()[-1].split() == ["sqlite", "1.0", "1,000", "900", "0.25x"]


def test_cpu_and_timeline_tables() -> None:
    runs = [_run(4.0, 2.0, 1)]
    cpu = _printed(cpu_table, runs, 2.0, 0.75)
    assert "  reload: MariaDB 0.8" in cpu
    assert "  W=2: MariaDB 1.0, workers 2.0, kmdb-import 0.5, S3 server and bench 0.1" in cpu
    timeline = _printed(timelines, runs).splitlines()
    # In time order; workers numbered by name.
    assert timeline[-2:] == ["    0.00   1.00  worker 1  scan", "    1.00   2.00  worker 2  settle"]


def test_row_counts_that_differ_between_runs_are_named() -> None:
    same = [_run(1.0, None, 1), _run(2.0, None, 1, workers=1)]
    assert compare_counts(same) == []
    assert compare_counts([]) == []
    other = [_run(1.0, None, 1), _run(2.0, None, 1, workers=1, events=901, keys=8)]
    assert compare_counts(other) == [
        "events: W=2 has 900, W=1 has 901",
        "keys: W=2 has 9, W=1 has 8",
    ]
