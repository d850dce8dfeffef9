"""Running kmdb's console scripts for a benchmark, with its own settings, logged to a file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from kmdb.errors import BenchError

# Settings of kmdb's commands that a benchmark passes on from its own environment;
# every other kmdb setting is the benchmark's own.
PASSED_ON = ("KMDB_BATCH_SIZE", "KMDB_PART_SIZE")


def say(message: str) -> None:
    """Tell how the run goes, on stderr (stdout holds the figures)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def command(name: str) -> list[str]:
    """A kmdb console script next to this interpreter, else the same through `python -c`."""
    script = Path(sys.executable).parent / f"kmdb-{name}"
    if script.exists():
        return [str(script)]
    code = "import sys; from kmdb.cli import main; sys.exit(main())"
    return [sys.executable, "-c", code, name]


def environment(base: dict[str, str], **settings: str) -> dict[str, str]:
    """This process's environment without kmdb's, database's and AWS settings (but PASSED_ON),
    with base and settings on top."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KMDB_", "DATABASE_URL", "AWS_")) or k in PASSED_ON
    }
    env.update(base)
    env.update(settings)
    return env


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log (nothing if it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def check_call(cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
    """Run cmd with its output appended to log; BenchError with the log's tail if it fails."""
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(cmd)}\n".encode())
        out.flush()
        code = subprocess.call(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        raise BenchError(f"{' '.join(cmd)} exited with {code}:\n{tail(log)}")
