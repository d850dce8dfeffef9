"""kmdb.bench_reports: the reports' benchmark run end to end on a tiny sample, on SQLite and MariaDB.

Its figures are not checked; that every report runs, on a database it builds once, is.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kmdb.bench_reports import CASES


def _bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kmdb.bench_reports", "--lines", "2000", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )


def test_every_report_is_timed_on_each_database_built_once(mysql_url: str, tmp_path: Path) -> None:
    sqlite = f"sqlite:///{tmp_path / 'reports.sqlite3'}"
    args = ["--folder", str(tmp_path / "export"), "--database", sqlite, "--database", mysql_url]
    first = _bench(tmp_path, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.startswith(
        f"Writing a sample export of 2,000 lines to {tmp_path / 'export'}"
    )
    assert first.stdout.count("Importing ") == 2
    for url in (sqlite, mysql_url):
        table = first.stdout.split(f"\n{url}: ", 1)[1].splitlines()
        assert table[0].endswith(" properties") and table[1].split() == [
            "report",
            "seconds",
            "peak",
            "RSS",
            "MB",
        ]
        assert [line[:24].strip() for line in table[2 : 2 + len(CASES)]] == list(CASES)
    again = _bench(tmp_path, *args, "--only", "revenue by month")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Writing" not in again.stdout and "Importing" not in again.stdout
    assert again.stdout.splitlines()[-1].startswith("revenue by month")
