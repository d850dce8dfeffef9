"""Following an RQ-driven import from the command line, with a progress bar."""

from __future__ import annotations

import sys
import time

from redis import Redis
from rq import Worker
from sqlalchemy import Engine
from tqdm import tqdm

from kmdb.errors import NoProgress
from kmdb.load.ledger import progress
from kmdb.orchestrate.graph import replan_dead
from kmdb.orchestrate.liveness import pending, worker_alive
from kmdb.orchestrate.queues import queue
from kmdb.settings import Settings


def live_workers(settings: Settings, redis: Redis) -> int:
    """Workers on kmdb's queue that still run."""
    q = queue(settings, redis)
    return sum(1 for w in Worker.all(queue=q) if worker_alive(redis, w.name))


def follow(settings: Settings, redis: Redis, engine: Engine, revisions: list[int]) -> list[str]:
    """Show the import's progress (lines across all workers) until no job is left; return failed job ids.

    Jobs that wait on dead ones are planned again; jobs that no live worker takes
    for settings.wait_for_workers seconds (KMDB_WAIT_FOR_WORKERS) raise NoProgress
    rather than wait for ever.
    """
    q = queue(settings, redis)
    failed_before = set(q.failed_job_registry.get_job_ids())
    wanted = set(revisions)
    idle_since: float | None = None

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
            if started or live_workers(settings, redis):
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > settings.wait_for_workers:
                left = waiting + started
                raise NoProgress(
                    f"{left} jobs wait on queue {settings.queue!r} and no worker runs them; "
                    "start kmdb-work (or kmdb-pool), then run kmdb-import --wait again.",
                    left,
                    settings.queue,
                )
            time.sleep(1)
    return sorted(set(q.failed_job_registry.get_job_ids()) - failed_before)
