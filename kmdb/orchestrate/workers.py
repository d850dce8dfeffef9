"""Running RQ workers on kmdb's queue."""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import redis.exceptions
from rq import Queue, SimpleWorker
from rq.executions import Execution
from rq.job import Job
from rq.worker import WorkerStatus
from sqlalchemy import Engine

from kmdb import settings as settings_module
from kmdb.errors import DatabaseUnavailable, RedisUnavailable, Stopped, is_transient
from kmdb.load.engine import make_engine
from kmdb.orchestrate import queues
from kmdb.orchestrate.graph import replan_dead
from kmdb.orchestrate.liveness import pending
from kmdb.pipeline.leftovers import remove_leftovers
from kmdb.retry import BETWEEN_JOBS, DATABASE_AT_START, REDIS_OUTAGE, retrying
from kmdb.settings import Settings
from kmdb.stop import STOP

log = logging.getLogger(__name__)
T = TypeVar("T")

# Redis errors that a restart causes (refused, reset, still loading its data).
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def outage_wait() -> float:
    """Seconds to wait for a lost Redis or database to come back (KMDB_OUTAGE_WAIT)."""
    return settings_module.from_env().outage_wait


def riding_out_redis(action: Callable[[], T], doing: str, wait: float | None = None) -> T:
    """Run action, again and again with backoff while Redis does not answer, up to the outage wait.

    Every step of RQ's bookkeeping is a transaction or an idempotent write, so a
    step that failed on a lost connection can be run again whole.
    """

    def give_up(exc: BaseException, waited: float) -> RedisUnavailable:
        return RedisUnavailable(
            f"Redis did not answer for {waited:.0f} s while {doing} ({exc}); check that "
            "redis-server runs, then start the worker again.",
            doing=doing,
        )

    said = doing.replace("{", "{{").replace("}", "}}")
    return retrying(
        action,
        lambda exc: isinstance(exc, REDIS_DOWN),
        REDIS_OUTAGE,
        # Read only once Redis is lost: this wraps every heartbeat and poll.
        budget=outage_wait if wait is None else lambda: wait,
        say=f"Redis does not answer ({{error}}) while {said}; trying again in {{pause:.0f}} s.",
        give_up=give_up,
    )


# A burst worker with nothing to do looks this often (seconds) for work that running jobs
# release, and whether they are done; cheap Redis counts, so that it starts or quits at once.
POLL = 0.05
# ...and, while nothing changes, less and less often, down to this (a worker waiting on a
# settle of several seconds made some 40 Redis commands a second).
POLL_MAX = 0.4
# ...and checks at least this often whether the workers of started jobs are alive.
CHECK_EVERY = 1.0
# Before quitting on jobs that wait with nothing started, it looks again after this long.
SETTLING = 0.25
# Seconds within which a worker does not renew its key again with the same TTL.
HEARTBEAT_EVERY = 2.0


def warm_up() -> None:
    """Load what every job needs once, before the worker takes its first job.

    boto3's S3 model and the times of day of row timestamps, made here, are not
    made again for each job (each is a noticeable part of a short job).
    """
    import gc

    import kmdb.orchestrate.jobs  # noqa: F401  (what every job runs; kmdb-import names it only)
    from kmdb.transform.rows import prepare_times_of_day

    prepare_times_of_day()
    try:
        import boto3
        import sqlalchemy.dialects.mysql.pymysql  # noqa: F401

        boto3.client("s3", region_name="us-east-1")
    except Exception as exc:  # only a cache: a job that needs S3 reports the real problem
        log.debug("Could not prepare an S3 client in advance: %s", exc)
    # The modules loaded so far live as long as the process. Out of the collector's
    # sight, its full passes no longer walk them while a job allocates rows: that
    # walking was a large share of an import's CPU time.
    gc.freeze()


class KmdbWorker(SimpleWorker):
    """An RQ worker that runs its jobs itself, and whose shutdown lets the job in flight finish its chunk.

    RQ's default worker forks a work horse for each job. Here a job runs in the
    worker's own process instead: its database connections, compiled statements,
    S3 client and caches stay warm from one job to the next, and no fork is paid
    for per job, which an export of many small revision files would feel. A
    thread keeps the worker's heartbeat going while a job runs, as RQ's forking
    worker does from its side of the fork.

    On SIGINT or SIGTERM RQ waits for the running job (a warm shutdown), which
    may take hours on a big revision; this one also asks the job to stop: it
    commits its chunk in flight and stops. A later run goes on from there.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stopped_jobs: list[str] = []  # put back on the queue after a stop on request
        # The last heartbeat sent (its TTL, and when) and the last state written: see heartbeat.
        self._beat: tuple[int, float] | None = None
        self._state_written: str | None = None

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()  # type: ignore[no-untyped-call]  # untyped in RQ
        STOP.set()

    # RQ 3 counts jobs only in the worker's Redis hash, which is gone once a burst
    # worker quits; kmdb-work --burst exits 1 on failed jobs, so it counts them here.
    # A lost Redis while a job ends would make RQ quit (and honcho stop the whole
    # pool): each step is tried again until Redis is back.
    def handle_job_success(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> None:
        riding_out_redis(
            lambda: super(KmdbWorker, self).handle_job_success(job, queue, *args, **kwargs),
            f"recording that job {job.id} is done",
        )
        self.successful_job_count += 1

    def handle_job_failure(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> None:
        self.failed_job_count += 1
        riding_out_redis(
            lambda: super(KmdbWorker, self).handle_job_failure(job, queue, *args, **kwargs),
            f"recording that job {job.id} failed",
        )

    def _finalize_failure(
        self,
        job: Job,
        queue: Queue,
        execution: Execution,
        exc_info: tuple[type[BaseException] | None, BaseException | None, TracebackType | None],
    ) -> None:
        stopped = exc_info[1]
        if not isinstance(stopped, Stopped):
            super()._finalize_failure(job, queue, execution, exc_info)
            return
        # A stop on request is no failure: the job goes back to the front of the queue,
        # where its dependents still wait on it, and the next worker goes on from its
        # last commit. Nothing is logged as an error.

        def put_back() -> None:
            with self.connection.pipeline() as pipe:
                self.cleanup_execution(job, pipeline=pipe, execution=execution)
                queue._enqueue_job(job, pipeline=pipe, at_front=True)
                pipe.execute()

        riding_out_redis(put_back, f"putting job {job.id} back on the queue")
        self.stopped_jobs.append(job.id)
        log.warning(
            "%s Job %s is queued again; the next worker goes on from there.", stopped, job.id
        )

    def prepare_job_execution(self, job: Job, *args: Any, **kwargs: Any) -> None:
        riding_out_redis(
            lambda: super(KmdbWorker, self).prepare_job_execution(job, *args, **kwargs),
            f"starting job {job.id}",
        )

    def handle_execution_ended(self, job: Job, *args: Any, **kwargs: Any) -> None:
        riding_out_redis(
            lambda: super(KmdbWorker, self).handle_execution_ended(job, *args, **kwargs),
            f"ending job {job.id}",
        )

    # RQ renews the worker's key five times from one job to the next (after the job,
    # in the suspension check, before and after dequeueing, as the next job starts),
    # three commands each, and writes its idle state twice: most of a short job's
    # commands. A renewal with the TTL of one sent less than HEARTBEAT_EVERY seconds
    # ago, and a state just written, are left out; a new TTL is always sent.
    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        ttl = timeout or self.worker_ttl + 60
        beat, now = self._beat, time.monotonic()
        if beat is not None and beat[0] == ttl and now - beat[1] < HEARTBEAT_EVERY:
            return
        riding_out_redis(
            lambda: super(KmdbWorker, self).heartbeat(timeout, pipeline=pipeline), "idle"
        )
        self._beat = (ttl, now)

    def check_for_suspension(self, burst: bool) -> None:
        riding_out_redis(lambda: super(KmdbWorker, self).check_for_suspension(burst), "idle")

    def set_state(self, state: str, pipeline: Any = None) -> None:
        if pipeline is None and state == self._state_written:
            self._state = state
            return
        riding_out_redis(
            lambda: super(KmdbWorker, self).set_state(state, pipeline=pipeline), "idle"
        )
        self._state_written = state

    def teardown(self) -> None:
        try:
            riding_out_redis(super().teardown, "leaving")
        except RedisUnavailable as exc:  # leaving anyway: the worker's key expires by itself
            log.warning("%s", exc)

    def unsubscribe(self) -> None:
        # RQ sends UNSUBSCRIBE and only then stops its listener thread, which waits
        # for messages 60 s at a time. When the reply wakes the thread first, it goes
        # back to waiting, and RQ's join gives up on it only after a second: a burst
        # run that found the queue empty would then take the imports late after the
        # settle, or quit late after the last job. Stopped first, the thread leaves
        # as soon as the reply wakes it.
        if self.pubsub_thread:
            self.pubsub_thread.stop()
        super().unsubscribe()  # type: ignore[no-untyped-call]  # untyped in RQ

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        # SimpleWorker's own is the job's timeout (a day): a killed worker would
        # look alive that long. The heartbeat thread renews this one.
        return int(self.job_monitoring_interval) + 60

    def execute_job(self, job: Job, queue: Queue) -> None:
        execution = riding_out_redis(lambda: self.prepare_execution(job), f"starting job {job.id}")
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self.job_monitoring_interval):
                try:
                    self.maintain_heartbeats(job, execution)
                except Exception as exc:  # a missed beat is retried; the job goes on
                    log.warning("Could not renew the worker's heartbeat: %s", exc)

        beating = threading.Thread(target=beat, name="kmdb-heartbeat", daemon=True)
        beating.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            done.set()
            beating.join()
        self.set_state(WorkerStatus.IDLE)


def work(settings: Settings, burst: bool = False) -> tuple[int, int]:
    """Run a worker; with burst, until no job is left for it. Returns (jobs done, jobs failed).

    RQ's own burst mode quits as soon as the queue is empty, even while another
    worker runs a job that will enqueue more (the settle step releases the
    imports). This one waits while live jobs may still release work, so two
    burst workers share the import phase too, and it quits when what is left
    waits on jobs that no live worker runs. A lost Redis or database is waited
    for (KMDB_OUTAGE_WAIT seconds); a stop on request puts the job in flight back
    on the queue and is not a failure.
    """
    outage_wait()  # a malformed KMDB_OUTAGE_WAIT is said before anything starts
    redis = queues.connect(settings)
    q = queues.queue(settings, redis)
    warm_up()
    remove_leftovers(settings.tmp_dir)
    if not burst:
        worker = _run_worker(q, redis, burst=False)
        return worker.successful_job_count, worker.failed_job_count
    engine = waiting_for_database(settings)
    done = failed = 0
    confirmed_stuck = False
    while True:
        worker = _run_worker(q, redis, burst=True)
        done += worker.successful_job_count
        failed += worker.failed_job_count
        if STOP.is_set():  # SIGINT or SIGTERM: the job in flight stopped after its chunk
            break

        def look(stuck: bool = confirmed_stuck) -> str:
            if STOP.is_set():
                return "quit"
            return riding_out_redis(
                lambda: _next_step(settings, redis, engine, q, stuck), "looking for work left"
            )

        # The database may be away between jobs: wait for it (Redis was ridden out already).
        step = retrying(
            look,
            lambda exc: is_transient(exc) and not isinstance(exc, RedisUnavailable),
            BETWEEN_JOBS,
            say="Waiting for the database ({error})",
        )
        if step == "again":
            continue
        if step == "settling":
            confirmed_stuck = True
            riding_out_redis(lambda: _wait_for_queue(q, SETTLING), "looking for work left")
            continue
        if step == "quit":
            break
        confirmed_stuck = False
        riding_out_redis(lambda: _wait_for_change(q), "looking for work left")
    engine.dispose()
    return done, failed


def _run_worker(q: Queue, redis: Any, burst: bool) -> KmdbWorker:
    """Run one RQ worker to its end; a new one if Redis was lost while it registered."""

    def run() -> KmdbWorker:
        worker = KmdbWorker([q], connection=redis, queue_class=queues.KmdbQueue)
        if burst:
            worker.work(burst=True, logging_level="INFO")
        else:
            worker.work()
        return worker

    return riding_out_redis(run, "starting a worker")


def _next_step(
    settings: Settings, redis: Any, engine: Engine, q: Queue, confirmed_stuck: bool
) -> str:
    """What a burst worker does once its queue is empty: again, settling, wait or quit."""
    if q.count:
        return "again"
    if replan_dead(settings, redis, engine):
        log.warning("Planned again the jobs of workers that died.")
        return "again"
    waiting, started = pending(q, engine)
    if not started and waiting and not confirmed_stuck:
        # RQ enqueues a finished job's dependents a moment after it leaves the
        # started registry: look again before calling the rest stuck.
        return "settling"
    if not started:
        if waiting:
            log.warning(
                "%s jobs wait on jobs that no live worker runs; run kmdb-import to plan them again.",
                waiting,
            )
        return "quit"
    return "wait"


def waiting_for_database(settings: Settings) -> Engine:
    """An engine for DATABASE_URL, once the database answers (up to the outage wait)."""
    return retrying(
        lambda: make_engine(settings),
        lambda exc: isinstance(exc, DatabaseUnavailable),
        DATABASE_AT_START,
        budget=outage_wait,
        say="Waiting for the database ({error}); trying again in {pause:.0f} s.",
    )


def _wait_for_queue(q: Queue, seconds: float) -> None:
    """Wait up to seconds for a job to be queued."""
    _queued_within(q, seconds)


def _wait_for_change(q: Queue) -> None:
    """Wait until a job is queued, no job is started any more, or it is time to check again."""
    # Counts only (two commands a look): the started registry's clean-up is the survey's.
    started = q.started_job_registry.get_job_count(cleanup=False)
    deadline = time.monotonic() + CHECK_EVERY
    pause = POLL
    while (left := deadline - time.monotonic()) > 0:
        if _queued_within(q, min(pause, left)):
            return
        if q.started_job_registry.get_job_count(cleanup=False) < started:
            return
        pause = min(POLL_MAX, pause * 2)


def _queued_within(q: Queue, seconds: float) -> bool:
    """Whether a job is queued within seconds; Redis 6.2+ answers the moment one is.

    BLMOVE from the queue to itself, head to head, waits for a job and moves nothing:
    a worker waiting on a settle takes the imports it releases at once, not up to a
    pause later. Older Redis has no BLMOVE: then a pause, and a count.
    """
    if q.connection not in _NO_BLMOVE:
        try:
            # Redis 6 takes a timeout in fractions of a second; redis-py annotates an int.
            moved = q.connection.blmove(q.key, q.key, seconds, "LEFT", "LEFT")  # type: ignore[arg-type]
            return moved is not None
        except redis.exceptions.ResponseError:
            _NO_BLMOVE.add(q.connection)
    time.sleep(seconds)
    return bool(q.count)


# Redis connections whose server said it has no BLMOVE.
_NO_BLMOVE: weakref.WeakSet[Any] = weakref.WeakSet()


def pool_command(settings: Settings, workers: int | None, procfile: str | None) -> list[str]:
    """The honcho command that runs the Procfile's workers, KMDB_WORKERS of them."""
    import sys
    from pathlib import Path

    import kmdb

    count = workers or settings.pool_size()
    if procfile is None:
        # The project's own Procfile when run from a checkout, else the one kmdb ships.
        local = Path("Procfile")
        procfile = str(local if local.is_file() else Path(kmdb.__file__).with_name("Procfile"))
    # The Procfile names kmdb-work; make sure it is found even from an unactivated venv.
    scripts = str(Path(sys.executable).parent)
    if scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")
    return [
        sys.executable,
        "-m",
        "honcho",
        "-f",
        procfile,
        "-d",
        os.getcwd(),
        "start",
        "-c",
        f"worker={count}",
    ]
