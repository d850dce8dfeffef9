"""The second pass: a job's parts of revision files, imported chunk by chunk.

The import of a part writes events and properties against canonical
identities, in chunks of KMDB_BATCH_SIZE lines: each chunk's rows and the
part's progress commit in one transaction, so an interrupted import resumes
exactly where its last commit left it. A chunk is parsed while the one before
it loads, so that the database and Python work at the same time.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from sqlalchemy import Engine

from kmdb.errors import ConcurrentImport, Stopped, Unreadable, concerns_one_file
from kmdb.extract.export import Source
from kmdb.load.engine import autocommit
from kmdb.load.ledger import (
    Counts,
    revision_state,
    revision_states,
    states_on,
    sum_parts,
    sum_parts_in,
)
from kmdb.load.locks import LockSet, part_lock
from kmdb.load.parts import plan_parts
from kmdb.pipeline.chunks import ChunkStream
from kmdb.pipeline.scan_pass import scan_revision
from kmdb.pipeline.steps import REJECTIONS_LOGGED, Importer, Prepared, Remembered
from kmdb.settings import Settings
from kmdb.stop import check_stop

log = logging.getLogger(__name__)

# While chunks go through, the cycle collector runs only every this many chunks.
COLLECT_EVERY = 16


@contextlib.contextmanager
def _collecting_every_few_chunks() -> Iterator[Callable[[int], None]]:
    """Turn the automatic cycle collector off; the caller collects every COLLECT_EVERY chunks.

    A chunk's parsed lines are many small objects that live until it is loaded.
    The collector walked each of them once or twice while they were parsed, and
    found nothing: rows are freed by their reference counts. Cycles are rare (a
    few objects of connections and threads per chunk), so collecting them by hand
    now and then keeps memory bounded on a file of any size.
    """
    was_on = gc.isenabled()
    gc.disable()

    def after(chunk: int) -> None:
        if chunk % COLLECT_EVERY == COLLECT_EVERY - 1:
            gc.collect(1)

    try:
        yield after
    finally:
        if was_on:
            gc.enable()


def _parse_while_loading(
    importer: Importer,
    stream: ChunkStream,
    settings: Settings,
    on_chunk: Callable[[Counts], None] | None,
) -> None:
    """Parse chunk k+1 while chunk k loads: the database works while Python parses.

    One loader thread keeps the commits in order; the GIL is free while it waits
    on the server, so the two overlap. Parts finished by a chunk are summed up
    into their revisions after its commit.
    """

    def load(prepared: Prepared) -> Counts:
        # The chunk's transaction and the sums after it share a connection: a checkout
        # (and its ping and ROLLBACK) fewer per chunk.
        with importer.engine.connect() as conn:
            counts = importer.commit(prepared, conn)
            finished = [m.part for m in prepared.moves if m.finished]
            for part in finished:
                stream.running.pop((part.revision, part.part), None)
            done = sum_parts_in(conn, *{part.revision for part in finished})
            conn.commit()
        _forget(stream.source, done)
        return counts

    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="kmdb-load") as loader,
        _collecting_every_few_chunks() as collect,
    ):
        loading: Future[Counts] | None = None

        def finish() -> None:
            counts = loading.result() if loading is not None else None
            if counts is not None and on_chunk:
                on_chunk(counts)

        waited = time.perf_counter()
        for chunk, segments in enumerate(stream.chunks(settings.batch_size)):
            importer.timed("download", waited)
            collect(chunk)
            prepared = importer.prepare(segments)
            try:
                finish()
                check_stop(segments[-1].part.revision, segments[-1].part.lines_done)
            except BaseException:
                for staged in prepared.staged:
                    staged.discard()
                raise
            loading = loader.submit(load, prepared)
            waited = time.perf_counter()
        finish()


def _forget(source: Source, revisions: list[int]) -> None:
    """Let the source drop what it keeps of revisions now imported (kmdb.extract.stash)."""
    forget = getattr(source, "forget", None)
    if forget is not None:
        for revision in revisions:
            forget(revision)


def import_parts(
    engine: Engine,
    source: Source,
    parts: list[tuple[int, int]],
    settings: Settings,
    on_chunk: Callable[[Counts], None] | None = None,
    remembered: Remembered | None = None,
) -> Counts:
    """Import what is left of some parts of revision files, (revision, part) each, in order.

    Small files share chunks, and so transactions and the loader's time, as if
    they were one file. Revisions not scanned yet are scanned first, so that no
    alias is lost (for their events to point at canonical people at once, settle
    after the scan). A file that cannot be read is marked failed and the others
    go on; the call then fails naming it. Finished parts add nothing. A worker passes
    the ids it remembers from its earlier jobs (steps.Remembered).
    """
    revisions = sorted({revision for revision, _ in parts})
    # The job's first reads share a connection (a checkout, and its ping, fewer), one of
    # autocommit: they need no snapshot in common, and it goes back with no ROLLBACK.
    with autocommit(engine).connect() as conn:
        states = states_on(conn, revisions)
        importer = Importer(engine, settings, remembered, conn)
    unscanned = [n for n in revisions if states[n]["status"] != "done" and not states[n]["scanned"]]
    failures: list[str] = []
    planned = len(parts)
    with LockSet(engine) as locks:
        # Held from here to the end (the stream takes it again): other workers tell a
        # live job from a dead one by its first lock (kmdb.orchestrate.liveness.is_dead),
        # and scanning a big revision first takes long.
        if parts:
            locks.take(part_lock(*parts[0]))
        for revision in unscanned:
            try:
                scan_revision(engine, source, revision, settings)
            except Exception as exc:
                if len(parts) == 1 or not concerns_one_file(exc):
                    raise
                failures.append(f"revision {revision}: {exc}")
        if unscanned:
            states = revision_states(engine, revisions)
            parts = [
                (r, p) for r, p in parts if states[r]["scanned"] or states[r]["status"] == "done"
            ]
        stream = ChunkStream(engine, source, parts, locks, states)
        try:
            _parse_while_loading(importer, stream, settings, on_chunk)
        except ConcurrentImport:
            raise
        except Stopped as exc:
            stream.stop(exc, "stopped")
            raise
        except Exception as exc:
            stream.stop(exc, "failed")
            raise
        _forget(source, sum_parts(engine, *stream.already_done))
    for revision, rejected in sorted(importer.rejected.items()):
        if rejected > REJECTIONS_LOGGED:
            log.warning(
                "Revision %s: %s lines rejected in all; they are in the rejected_lines table.",
                revision,
                rejected,
            )
    failures += stream.failures
    if failures:
        raise Unreadable.of_job(failures, planned, "parts")
    return importer.counts


def import_revision(
    engine: Engine,
    source: Source,
    revision: int,
    settings: Settings,
    on_chunk: Callable[[Counts], None] | None = None,
) -> Counts:
    """Import what is left of a revision file, its parts one after the other."""
    state = revision_state(engine, revision)
    if state["status"] == "done":
        return Counts()
    if not state["scanned"]:
        scan_revision(engine, source, revision, settings)
    planned = plan_parts(engine, source, revision, settings)
    return import_parts(
        engine, source, [(revision, p["part"]) for p in planned], settings, on_chunk
    )
