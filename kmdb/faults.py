"""A pause at a named stage of the job graph, for tests that stop an import there.

Only tests set KMDB_PAUSE_AT (a stage name: scan, settle-before, import,
settle-after, index-build) and KMDB_PAUSE_DIR. The first job to reach that
stage writes <dir>/<stage>.reached with its process id, then waits, holding
its job's lock as a running job does, until <dir>/<stage>.go exists or the
worker is asked to stop. Without KMDB_PAUSE_AT this costs one dictionary
look-up.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

STAGES = ("scan", "settle-before", "import", "settle-after", "index-build")


def pause(stage: str) -> None:
    """Wait at stage if a test asked for it (see the module's docstring)."""
    if os.environ.get("KMDB_PAUSE_AT") != stage:
        return
    folder = Path(os.environ.get("KMDB_PAUSE_DIR", "."))
    try:
        # Once only: a job planned again after the stop runs through.
        fd = os.open(folder / f"{stage}.reached", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    from kmdb.pipeline.import_pass import STOP

    with _job_lock():
        with os.fdopen(fd, "w") as out:
            out.write(str(os.getpid()))
        go = folder / f"{stage}.go"
        while not go.exists() and not STOP.is_set():
            time.sleep(0.05)


@contextlib.contextmanager
def _job_lock():
    """Hold the running job's lock while paused: the job must look alive, as it would be."""
    from rq import get_current_job

    from kmdb.load.locks import LockBusy, LockSet
    from kmdb.orchestrate.graph import lock_of

    job = get_current_job()
    what = lock_of(job) if job is not None else None
    if what is None:
        yield
        return
    from kmdb import settings as settings_module
    from kmdb.load.engine import make_engine

    engine = make_engine(settings_module.from_env())
    locks = LockSet(engine)
    try:
        with contextlib.suppress(LockBusy):  # the job holds it already (the index build)
            locks.take(what, wait=0)
        yield
    finally:
        locks.close()
        engine.dispose()
