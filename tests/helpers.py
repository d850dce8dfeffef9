"""Helpers shared by the tests: running the real commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def run(command: str, *args: str, env: dict[str, str], check: bool = True, timeout: float = 300):
    """Run a kmdb console script as a user would; return the CompletedProcess."""
    result = subprocess.run(
        [str(BIN / command), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=os.getcwd(),
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{command} {' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def start_burst_workers(count: int, env: dict[str, str], capture: bool = False) -> list:
    """Start `kmdb-work --burst` processes; with capture, their output is kept for communicate().

    Without capture the output is dropped: a pipe nobody reads would stall a chatty worker.
    """
    output = subprocess.PIPE if capture else subprocess.DEVNULL
    return [
        subprocess.Popen(
            [str(BIN / "kmdb-work"), "--burst"], env=env, stdout=output, stderr=output, text=True
        )
        for _ in range(count)
    ]


def burst_workers(count: int, env: dict[str, str]) -> list[subprocess.CompletedProcess]:
    """Run `kmdb-work --burst` processes side by side until all exit; return what each did."""
    results = []
    for proc in start_burst_workers(count, env, capture=True):
        out, err = proc.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results
