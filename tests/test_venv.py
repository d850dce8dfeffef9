"""bin/venv: the interpreter a new .venv gets ($PYTHON, else an optimized system Python 3.11+).

Not a module of kmdb, but what every other command starts with.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "bin" / "venv"
SYSTEM = Path("/usr/bin/python3")


def _which(path: str | None = None, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "PYTHON"} | env
    if path is not None:
        environ["PATH"] = path
    done = subprocess.run(
        [str(VENV), "--which"], env=environ, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _makes_a_venv_of_311_or_newer(python: str, folder: Path) -> bool:
    """Whether python makes a venv here whose interpreter is 3.11 or newer."""
    made = subprocess.run(
        [python, "-m", "venv", "--without-pip", str(folder)], capture_output=True, text=True
    )
    if made.returncode != 0:
        return False
    code = "import sys; sys.exit(sys.version_info < (3, 11))"
    return subprocess.run([str(folder / "bin" / "python"), "-c", code]).returncode == 0


def test_python_in_the_environment_wins() -> None:
    assert _which(PYTHON="python3.12") == "python3.12"
    assert _which(PYTHON="/opt/python/bin/python3") == "/opt/python/bin/python3"


def test_the_interpreter_chosen_makes_a_venv_of_python_311_or_newer(tmp_path: Path) -> None:
    assert _makes_a_venv_of_311_or_newer(_which(), tmp_path / "venv")


def test_a_python3_first_on_the_path_does_not_displace_a_usable_system_python(
    tmp_path: Path,
) -> None:
    # pyenv's shims come first on many PATHs; its default build runs kmdb slower.
    if not _makes_a_venv_of_311_or_newer(str(SYSTEM), tmp_path / "system"):
        pytest.skip(f"{SYSTEM} cannot make a venv of Python 3.11+ here")
    shims = tmp_path / "shims"
    shims.mkdir()
    shim = shims / "python3"
    shim.write_text("#!/bin/sh\nexit 1\n")
    shim.chmod(0o755)
    chosen = _which(path=f"{shims}:{os.environ['PATH']}")
    assert Path(chosen).resolve() == SYSTEM.resolve()
