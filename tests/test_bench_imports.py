"""kmdb.bench.imports: the import benchmark run end to end on a tiny export, as bin/bench.

Its figures are not checked (speed belongs to the benchmark, not to tests); its
rounds, reloads, completeness checks and option errors are."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.helpers import REDIS_URL, mysql_databases, mysql_server_url

BENCH = Path(__file__).resolve().parents[1] / "bin" / "bench"


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BENCH), *args], capture_output=True, text=True, timeout=600, cwd=BENCH.parent.parent
    )


def test_each_round_gets_a_reload_of_its_own_and_every_run_is_checked_complete(
    mysql_url: str, redis_queue: str
) -> None:  # the fixtures make a missing service skip, or fail under CI=true
    done = _bench(
        "--mysql-url",
        mysql_server_url(),
        "--redis-url",
        REDIS_URL,
        "--lines",
        "3000",
        "--lines-per-revision",
        "1000",
        "--workers",
        "2",
        "--repeat",
        "2",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert out.startswith("kmdb bench: 3,000 lines in 3 revisions (seed 0, 1,000 lines per")
    # One row per round, each with a ratio to a reload of its own round.
    rows = re.findall(r"^\s+(\d)\s+2\s+[\d.]+\s+[\d,]+\s+[\d,]+\s+[\d.]+x", out, re.M)
    assert rows == ["1", "2"]
    assert re.search(r"Reloads of the later rounds: [\d.]+ s", out)
    # The best bulk path too: loads into tables without secondary indexes, then the builds.
    assert re.search(r"^Best bulk path \(.*\): [\d.]+ s \([\d.]+ s of it building", out, re.M)
    ratios = re.findall(
        r"^\s+\d\s+2\s+[\d.]+\s+[\d,]+\s+[\d,]+\s+[\d.]+x\s+\S+\s+([\d.]+)x", out, re.M
    )
    assert len(ratios) == 2
    assert re.search(r"W=2: median import/reload [\d.]+x over 2 rounds", out)
    assert "All runs complete, with equal row counts." in out
    # The databases it made (named after its bucket) are gone.
    bucket = re.search(r"uploaded to s3://(kmdb-bench-[0-9a-f]+) ", done.stderr)
    assert bucket, done.stderr
    assert bucket.group(1).replace("-", "_") not in " ".join(mysql_databases())


def test_a_repeat_below_one_is_refused_with_a_sentence() -> None:
    done = _bench("--repeat", "0")
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "bin/bench: error: --repeat needs a number of rounds of at least 1, e.g. --repeat 3"
    )


def test_worker_counts_below_one_are_refused_with_a_sentence() -> None:
    done = _bench("--workers", "0,2")
    assert done.returncode == 2
    assert "--workers needs worker counts of at least 1, e.g. --workers 1,2" in done.stderr
