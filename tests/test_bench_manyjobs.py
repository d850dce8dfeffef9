"""kmdb.bench.manyjobs: the part sizes that make the jobs asked for, and the table as printed.

The table measured end to end is in tests/test_bench_scale.py."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from kmdb.bench.manyjobs import part_sizes, print_jobs
from kmdb.bench.runs import Run

COUNTS = {"events": 900, "properties": 2_000, "users": 50, "people": 40, "keys": 9, "aliases": 10}


def test_part_sizes_cut_the_revision_files_into_about_the_jobs_asked(tmp_path: Path) -> None:
    (tmp_path / "revisions").mkdir()
    for n, size in enumerate([1000, 800, 1000, 900], 1):
        (tmp_path / "revisions" / f"{n}.json").write_bytes(b"x" * size)
    # 4 files: 4 jobs are a part per file; 40 are 10 parts of the biggest file.
    assert part_sizes(tmp_path, [4, 40, 41]) == [1000, 100, 91]


def test_the_table_gives_jobs_ratio_commands_per_job_and_a_rows_check() -> None:
    def run(size: int, seconds: float, imports: int, calls: int, **counts: int) -> Run:
        jobs = {"scan": 8, "import": imports, "settle": 2}
        return Run(
            f"part size {size:,}", seconds, {**COUNTS, **counts}, 2,
            jobs_of=jobs, redis_calls=calls,
        )  # fmt: skip

    runs = [run(8_000_000, 6.0, 8, 1800), run(130_000, 9.0, 336, 34_600, events=899)]
    out = io.StringIO()
    args = argparse.Namespace(workers=2)
    ctx = {"lines": 300_000, "revisions": 8, "mb": 42.0, "rq_alone": (346, 3.46)}
    print_jobs(args, runs, ctx, out)
    lines = out.getvalue().splitlines()
    assert (
        "  RQ alone: 346 no-op jobs on the same workers take 3.5 s (20.0 ms per job and worker)"
        in lines
    )
    assert lines[1] == "Many jobs: 300,000 lines in 8 revision files (42.0 MB), 2 kmdb-work --burst"
    assert lines[3].split() == ["8,000,000", "8", "18", "6.0", "1.00x", "100", "first"]
    assert lines[4].split() == ["130,000", "336", "346", "9.0", "1.50x", "100", "DIFF"]
