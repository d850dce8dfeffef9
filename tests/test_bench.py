"""kmdb.bench's dispatcher (__main__): bin/bench runs the import benchmark, bin/bench NAME another.

Each module of kmdb.bench has a test file of its own (test_bench_*.py).
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bin" / "bench"


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BENCH), *args], capture_output=True, text=True, timeout=600)


def test_without_a_name_bin_bench_is_the_import_benchmark() -> None:
    done = _bench("--help")
    assert done.returncode == 0
    assert done.stdout.startswith("usage: bin/bench [-h] [--lines LINES] [--workers WORKERS]")
    assert "Time kmdb's import against a LOAD DATA reload of its own final rows." in done.stdout


def test_a_named_benchmark_runs_its_module_or_says_the_build_lacks_it() -> None:
    done = _bench("scale", "--help")
    if importlib.util.find_spec("kmdb.bench_scale") is None:
        assert done.returncode == 2
        assert done.stderr.strip() == "bin/bench scale: this build has no kmdb.bench_scale."
    else:
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("usage:")
