"""CPU time and peak memory of the processes a benchmark runs, read from /proc and getrusage."""

from __future__ import annotations

import os
import resource
import threading

_TICK = os.sysconf("SC_CLK_TCK")


def server_pid() -> int | None:
    """The pid of a MariaDB/MySQL server on this machine, to read its CPU time (None if not local)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() in ("mariadbd", "mysqld"):
                        return int(entry)
            except OSError:
                continue
    return None


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds a live process has used (0 if unknown)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def own_cpu() -> float:
    """CPU seconds this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu() -> float:
    """CPU seconds this process's reaped children have used."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(c) for c in f.read().split())
    except OSError:
        pass
    return found


def _vm_hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler(threading.Thread):
    """Reads VmHWM of each root process and all its descendants, keeping the max per process.

    Polled, because wait4's ru_maxrss would count the benchmark's own memory,
    which a child had before its exec.
    """

    def __init__(self, roots: list[int], interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.roots = roots
        self.interval = interval
        self.peaks: dict[int, dict[int, int]] = {root: {} for root in roots}
        self.stopping = threading.Event()

    def sample(self) -> None:
        """Read every process of the trees once."""
        for root in self.roots:
            stack, seen = [root], self.peaks[root]
            while stack:
                pid = stack.pop()
                hwm = _vm_hwm_kib(pid)
                if hwm:
                    seen[pid] = max(seen.get(pid, 0), hwm)
                stack.extend(_children(pid))

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            self.sample()

    def peak_kib(self, root: int) -> int:
        """The highest VmHWM seen of root or any process below it."""
        return max(self.peaks[root].values(), default=0)
