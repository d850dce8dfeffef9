"""bin/bench runs end to end on a tiny export: it is a script, so nothing else would notice it broke.

Its figures are not checked (speed belongs to the benchmark, not to tests); its
rounds, medians and completeness checks are.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import MYSQL_HOST, MYSQL_PASSWORD, MYSQL_PORT, MYSQL_USER, REDIS_URL

BENCH = Path(__file__).resolve().parents[1] / "bin" / "bench"


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    auth = MYSQL_USER + (f":{MYSQL_PASSWORD}" if MYSQL_PASSWORD else "")
    return subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--mysql-url",
            f"mysql+pymysql://{auth}@{MYSQL_HOST}:{MYSQL_PORT}",
            "--redis-url",
            REDIS_URL,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_repeated_rounds_each_get_a_reload_and_a_median(
    mysql_url: str, redis_queue: str
) -> None:  # the fixtures make a missing service skip, or fail under CI=true
    done = _bench(
        "--lines", "3000", "--lines-per-revision", "1000", "--workers", "2", "--repeat", "2"
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    rows = re.findall(r"^\s+(\d)\s+2\s+[\d.]+\s+[\d,]+\s+[\d,]+\s+([\d.]+)x", out, re.M)
    assert [r for r, _ in rows] == ["1", "2"]
    ratios = sorted(float(x) for _, x in rows)
    median = re.search(r"W=2: median import/reload ([\d.]+)x over 2 rounds", out)
    assert median and abs(float(median.group(1)) - sum(ratios) / 2) < 0.011
    assert re.search(r"Reloads of the later rounds: [\d.]+ s", out)
    assert "All runs complete, with equal row counts." in out


def test_a_repeat_below_one_is_refused_with_a_sentence() -> None:
    done = _bench("--repeat", "0")
    assert done.returncode == 2
    assert "--repeat needs a number of rounds of at least 1" in done.stderr
