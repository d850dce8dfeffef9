"""kmdb.bench_scale: bin/bench scale run end to end at tiny sizes.

Its figures are not checked against targets (speed belongs to the benchmark, not
to tests); the tables' structure, the numbers' consistency (more jobs as parts
shrink, Redis commands counted, equal rows) and its option errors are."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kmdb.bench_scale import parse_args
from tests.helpers import mysql_databases, mysql_server_url, unavailable

BENCH = Path(__file__).resolve().parents[1] / "bin" / "bench"
NUMBER = r"[\d,]+(?:\.\d+)?"


def _scale(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("redis-server") is None:  # bin/bench scale runs one of its own
        unavailable("redis-server", FileNotFoundError("not on PATH"))
    return subprocess.run(
        [str(BENCH), "scale", "--mysql-url", mysql_server_url(), *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=BENCH.parent.parent,
    )


def _rows(out: str, head: str) -> list[list[str]]:
    """The rows of the table under the line that starts with head, up to its notes."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(head)) + 2
    rows = []
    for line in lines[start:]:
        if not line.strip() or (line.startswith("  ") and not line.split()[0][0].isdigit()):
            break  # the notes under the table
        rows.append(line.split())
    return rows


def _number(text: str) -> float:
    return float(text.rstrip("x").replace(",", ""))


def test_the_tables_of_many_jobs_the_bulk_path_and_one_more_revision(
    mysql_url: str, redis_queue: str
) -> None:  # the fixtures make a missing service skip, or fail under CI=true
    done = _scale(
        "--lines", "3000", "--jobs", "8,16,40",
        "--big-lines", "20000", "--revision-lines", "2000",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert out.startswith("kmdb bench scale: ")

    # Many jobs: part size, import jobs, jobs, wall s, ratio, Redis commands per job, rows.
    jobs = _rows(out, "Many jobs: 3,000 lines in 8 revision files")
    assert len(jobs) == 3 and all(len(row) == 7 for row in jobs)
    sizes = [_number(r[0]) for r in jobs]
    imports = [_number(r[1]) for r in jobs]
    every = [_number(r[2]) for r in jobs]
    assert sizes == sorted(sizes, reverse=True)
    assert imports[0] == 8 and imports == sorted(imports) and imports[-1] >= 30
    assert all(e > i for e, i in zip(every, imports, strict=True))  # scans and settles too
    assert jobs[0][4] == "1.00x"
    assert all(_number(r[5]) > 0 for r in jobs)
    assert [r[6] for r in jobs] == ["first", "same", "same"]
    alone = re.search(
        rf"RQ alone: ({NUMBER}) no-op jobs on the same workers take ({NUMBER}) s", out
    )
    assert alone and _number(alone.group(1)) == max(every) and float(alone.group(2)) > 0

    best = re.search(
        rf"without secondary indexes, then the indexes built: ({NUMBER}) s "
        rf"\(({NUMBER}) s of it building\); import/best ({NUMBER})x",
        out,
    )
    assert best and float(best.group(1)) >= float(best.group(2)) > 0
    assert re.search(rf"\(bin/bench's reload\): {NUMBER} s; import/reload {NUMBER}x", out)

    # One more revision: a row not partitioned, a row partitioned, each with its ratio.
    assert "One more revision of 2,000 lines on a database of 20,000 lines (10 revisions)" in out
    revision = _rows(out, "One more revision of 2,000 lines")[1:]  # under the Server: line
    assert [" ".join(r[:-4]) for r in revision] == ["not partitioned", "kmdb-partition by 7 days"]
    for row in revision:
        on_top, empty, ratio, settle = (_number(x) for x in row[-4:])
        # The seconds are printed to a tenth, the ratio from the unrounded ones: it lies
        # within what the rounding allows (at these sizes a tenth is a third of a time).
        low, high = (on_top - 0.05) / (empty + 0.05), (on_top + 0.05) / max(empty - 0.05, 1e-9)
        assert low - 0.01 <= ratio <= high + 0.01 and settle >= 0
    assert "All imports complete, and every many-jobs run has the first run's rows." in out
    # The databases it made are gone.
    assert not re.search(r"kmdb_scale_", " ".join(mysql_databases()))


def test_server_args_run_the_revision_table_on_a_private_server(
    mysql_url: str, redis_queue: str
) -> None:
    if shutil.which("mariadbd") is None:
        unavailable("mariadbd", FileNotFoundError("not on PATH"))
    done = _scale(
        "--tables", "revision", "--big-lines", "3000", "--revision-lines", "1000",
        "--server-args=--innodb-buffer-pool-size=96M",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Many jobs" not in done.stdout
    servers = re.findall(r"^Server: (.*)$", done.stdout, re.M)
    assert len(servers) == 1
    assert servers[0].startswith("private mariadbd --innodb-buffer-pool-size=96M;")
    assert "innodb_buffer_pool_size 96 MB" in servers[0]
    assert done.stdout.splitlines()[-1] == "All imports complete."


@pytest.mark.parametrize(
    "args",
    [["--tables", "jobs,speed"], ["--jobs", "8,0"], ["--lines", "7"], ["--workers", "0"]],
)
def test_bad_options_are_refused_with_a_sentence(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(args)
    assert exited.value.code == 2
    assert "bin/bench scale: error: --" in capsys.readouterr().err
