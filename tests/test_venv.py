"""bin/venv picks the interpreter of a new .venv: $PYTHON, else an optimized system Python."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "bin" / "venv"


def _which(**env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "PYTHON"} | env
    done = subprocess.run(
        [str(VENV), "--which"], env=environ, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _can_make_venv(python: str) -> bool:
    code = "import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))"
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def test_python_in_the_environment_wins() -> None:
    assert _which(PYTHON="python3.12") == "python3.12"


def test_the_system_python_is_taken_when_it_can_make_a_venv() -> None:
    system = "/usr/bin/python3"
    usable = os.access(system, os.X_OK) and _can_make_venv(system)
    assert _which() == (system if usable else "python3")
