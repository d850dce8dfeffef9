"""kmdb.bench.measure: CPU seconds and peak memory of processes, as /proc and getrusage give them."""

from __future__ import annotations

import os
import subprocess
import sys

from kmdb.bench.measure import RssSampler, children_cpu, cpu_seconds, own_cpu

# A child that spins for a tenth of a second of CPU time, and one that holds 64 MB until told.
SPIN = "import time\nend = time.process_time() + 0.1\nwhile time.process_time() < end: pass"
HOLD = "import sys\nheld = bytearray(64 << 20)\nprint('ready', flush=True)\nsys.stdin.read()"


def test_cpu_seconds_of_this_process_and_of_its_reaped_children() -> None:
    before = children_cpu()
    subprocess.run([sys.executable, "-c", SPIN], check=True)
    assert children_cpu() - before >= 0.1
    assert own_cpu() > 0
    assert cpu_seconds(os.getpid()) > 0
    assert cpu_seconds(None) == 0.0
    assert cpu_seconds(2**22 + 7) == 0.0  # no such process


def test_the_peak_memory_of_a_tree_of_processes_counts_its_children() -> None:
    # A shell whose child holds the memory: the root's own peak is small.
    holder = subprocess.Popen(
        ["sh", "-c", f'{sys.executable} -c "$0"', HOLD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        sampler = RssSampler([holder.pid])
        sampler.sample()
        assert sampler.peak_kib(holder.pid) >= 64 << 10
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
