"""Following an RQ-driven import from the command line, with a progress bar."""

from __future__ import annotations

import sys
import time

from redis import Redis
from sqlalchemy import Engine
from tqdm import tqdm

from kmdb.parts import progress
from kmdb.queues import queue
from kmdb.schedule import pending, replan_dead
from kmdb.settings import Settings


def follow(settings: Settings, redis: Redis, engine: Engine, revisions: list[int]) -> list[str]:
    """Show the import's progress (lines across all workers) until no job is left; return failed job ids."""
    q = queue(settings, redis)
    failed_before = set(q.failed_job_registry.get_job_ids())
    wanted = set(revisions)

    def lines_read() -> int:
        with engine.connect() as conn:
            return sum(lines for n, (lines, _) in progress(conn).items() if n in wanted)

    start = lines_read()
    with tqdm(unit=" lines", unit_scale=True, file=sys.stderr, disable=None) as bar:
        while True:
            done = lines_read()
            bar.update(int(done) - start - bar.n)
            # A worker that died would leave its part waiting for ever: plan it again.
            replan_dead(settings, redis, engine)
            waiting, started = pending(q, engine)
            if not waiting and not started and not q.count:
                break
            time.sleep(1)
    return sorted(set(q.failed_job_registry.get_job_ids()) - failed_before)
