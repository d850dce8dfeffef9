"""A pause at a named stage of the job graph, for tests that stop an import there.

Only tests set KMDB_PAUSE_AT (a stage name: scan, settle-before, repoint, import,
settle-after, index-build) and KMDB_PAUSE_DIR. The first job to reach that
stage writes <dir>/<stage>.reached with its process id, then waits, until
<dir>/<stage>.go exists or the worker is asked to stop. A job that pauses
before taking its lock passes `holding`, which holds the job's lock meanwhile,
as a running job does. Without KMDB_PAUSE_AT this costs one dictionary look-up.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from kmdb.stop import STOP

STAGES = ("scan", "settle-before", "repoint", "import", "settle-after", "index-build")


def pause(stage: str, holding: Callable[[], AbstractContextManager[object]] | None = None) -> None:
    """Wait at stage if a test asked for it (see the module's docstring)."""
    if os.environ.get("KMDB_PAUSE_AT") != stage:
        return
    folder = Path(os.environ.get("KMDB_PAUSE_DIR", "."))
    try:
        # Once only: a job planned again after the stop runs through.
        fd = os.open(folder / f"{stage}.reached", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with holding() if holding is not None else contextlib.nullcontext():
        with os.fdopen(fd, "w") as out:
            out.write(str(os.getpid()))
        go = folder / f"{stage}.go"
        while not go.exists() and not STOP.is_set():
            time.sleep(0.05)
