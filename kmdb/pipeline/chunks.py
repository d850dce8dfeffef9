"""A job's parts as one stream of chunks of lines: what each transaction of an import holds.

A chunk has about KMDB_BATCH_SIZE lines (fewer at the start and near the end,
see batch_sizes); small parts share a chunk, so that a job of many small files
pays for few transactions. Each part of a chunk is a Segment of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select, update

from kmdb.errors import KmdbError, concerns_one_file
from kmdb.extract.export import Source
from kmdb.extract.framing import line_batches
from kmdb.extract.read_ahead import ReadAhead
from kmdb.load import schema
from kmdb.load.engine import autocommit
from kmdb.load.ledger import (
    Part,
    error_text,
    now,
    part_key,
    set_part,
    set_status,
    sum_parts,
    update_many,
)
from kmdb.load.locks import LockSet, part_lock


def batch_sizes(size: int, span: int | None = None) -> Callable[[int, int], int]:
    """The sizes of a pipeline's batches of lines, asked for as it goes.

    The returned function takes (bytes, lines) read so far and gives the next
    batch's size. Sizes double from size/32 up to size, so that the first batch
    is soon parsed and loading starts; and when span (the bytes to read) is
    known they halve again near its end, so that the last batch's load, which
    nothing overlaps, is short too: with batches of one size, those two ends
    were a large share of a small job's time.
    """
    smallest = max(1, size // 32)
    step = smallest

    def next_size(done: int, lines: int) -> int:
        nonlocal step
        wanted, step = step, min(size, step * 2)
        if span and done and lines:
            left = (span - done) * lines // done  # lines, by their average length so far
            if left <= 2 * smallest:
                return max(wanted, left + 1)
            if left < 2 * wanted:
                return max(smallest, left // 2)
        return wanted

    return next_size


@dataclass
class Segment:
    """Consecutive lines of one part, within a chunk; no lines: the part ends here."""

    part: Part
    first: int  # number of the first line
    raws: list[bytes]
    end_offset: int  # byte offset after the last line


class ChunkStream:
    """The parts of a job as one stream of chunks of lines, a chunk spanning parts if they are small.

    The parts are started together (their locks taken, their revisions marked
    running); each is marked running by the commit of its first chunk, and ends with
    a segment of no lines that marks it done in its chunk's transaction.
    """

    def __init__(
        self,
        engine: Engine,
        source: Source,
        parts: list[tuple[int, int]],
        locks: LockSet,
        states: dict[int, dict[str, Any]],
    ) -> None:
        self.engine = engine
        self.source = source
        self.parts = parts
        self.locks = locks
        self.states = states
        self.running: dict[tuple[int, int], Part] = {}  # started, not yet committed done
        self.failures: list[str] = []
        self.already_done: set[int] = set()  # revisions of parts found done
        self.reached: set[tuple[int, int]] = set()  # parts the stream has begun to read

    def _start(self) -> list[Part]:
        """Take the parts' locks, read how far they got, and mark their revisions running.

        A part is marked running by its first chunk's commit (progress_sql), not here:
        a transaction of its own, and its commit's flush to disk, cost a small job more
        than any of its statements. kmdb-status counts revisions by status, and a
        revision is marked running here unless it is already (the usual case: it has
        other parts). Parts that an earlier attempt left failed or stopped are marked
        running here, their error cleared, as their revisions are.
        """
        self.locks.take_all(
            [
                part_lock(revision, number)
                for revision, number in self.parts
                if self.states[revision]["status"] != "done"
            ]
        )
        p, r = schema.revision_parts, schema.revisions
        wanted = set(self.parts)
        # Only the job's own parts (and few others): a revision cut in a thousand parts
        # must not make each of its jobs read a thousand rows.
        query = (
            select(
                p,
                r.c.status.label("revision_status"),
                r.c.error.label("revision_error"),
                r.c.started_at.label("revision_started_at"),
            )
            .outerjoin(r, r.c.number == p.c.revision)
            .where(
                p.c.revision.in_(sorted({n for n, _ in wanted})),
                p.c.part.in_(sorted({n for _, n in wanted})),
            )
        )
        # After the locks, in autocommit: the read shows what the parts' last holders
        # committed, and the marks below need no transaction in common.
        with autocommit(self.engine).connect() as conn:
            rows = {(row.revision, row.part): dict(row._mapping) for row in conn.execute(query)}
            missing = sorted(wanted - set(rows))
            if missing:
                revision, number = missing[0]
                raise KmdbError(
                    f"Revision {revision} has no part {number}; run kmdb-import to plan it again."
                )
            parts = []
            for revision, number in self.parts:
                if self.states[revision]["status"] == "done":
                    continue
                row = rows[(revision, number)]
                if row["status"] == "done":
                    # The revision is done if this was its last part.
                    self.already_done.add(revision)
                    continue
                parts.append(Part.of(row))
            if not parts:
                return parts
            found = [rows[(part.revision, part.part)] for part in parts]
            retried = [row for row in found if row["status"] not in ("pending", "running")]
            if retried:
                conn.exec_driver_sql(
                    update_many(
                        "revision_parts",
                        [part_key(row["revision"], row["part"]) for row in retried],
                        {"status": ["'running'"] * len(retried), "error": ["NULL"] * len(retried)},
                    )
                )
            idle = sorted({row["revision"] for row in found if not _marked_running(row)})
            if idle:
                conn.execute(
                    update(r)
                    .where(r.c.number.in_(idle))
                    .values(
                        status="running",
                        error=None,
                        started_at=func.coalesce(r.c.started_at, now()),
                    )
                )
        for part in parts:
            self.running[(part.revision, part.part)] = part
        return parts

    def chunks(self, size: int) -> Iterator[list[Segment]]:
        """Chunks of about `size` lines (smaller at the start and near the end)."""
        parts = self._start()
        left = [
            ((p.revision, p.bytes_done, p.end_byte), _rest(p.bytes_done, p.end_byte)) for p in parts
        ]
        known = [rest for _, rest in left if rest is not None]
        sizes = batch_sizes(size, sum(known) if len(known) == len(left) else None)
        with ReadAhead(self.source, left) as self.reader:
            chunk: list[Segment] = []
            lines = read = read_lines = 0
            target = sizes(0, 0)

            def room_in_chunk(_part_bytes: int, _part_lines: int) -> int:
                # line_batches asks with what it read of the part; a chunk may hold
                # several parts, so its room is what its own target leaves.
                return max(1, target - lines)

            for part in parts:
                revision, number = part.revision, part.part
                offset = end = part.bytes_done
                self.reached.add((revision, number))
                try:
                    pieces = self.reader.chunks(revision, part.bytes_done, part.end_byte)
                    for first, raws, end in line_batches(
                        pieces, room_in_chunk, part.bytes_done, part.lines_done
                    ):
                        chunk.append(Segment(part, first, raws, end))
                        lines += len(raws)
                        if lines >= target:
                            read += end - offset
                            read_lines += lines
                            offset = end
                            yield chunk
                            chunk, lines = [], 0
                            target = sizes(read, read_lines)
                except Exception as exc:
                    if not concerns_one_file(exc) or len(self.parts) == 1:
                        if chunk:  # what was read before goes in first
                            yield chunk
                        raise
                    self.fail(part, exc)
                    self.failures.append(f"revision {revision} (part {number}): {exc}")
                    continue
                read += end - offset
                chunk.append(Segment(part, 0, [], 0))  # the part's end
            if chunk:
                yield chunk

    def stop(self, exc: BaseException, status: str) -> None:
        """Mark the parts still running failed (or stopped); those never reached pending again."""
        reached = {r for r, _ in self.reached}
        for unit, part in list(self.running.items()):
            if unit in self.reached:
                self.fail(part, exc, status)
            else:
                self.running.pop(unit)
                set_part(self.engine, part.revision, part.part, status="pending", error=None)
                if part.revision not in reached:
                    set_status(self.engine, part.revision, status="pending", error=None)

    def fail(self, part: Part, exc: BaseException, status: str = "failed") -> None:
        """Mark a part that stops here failed (or stopped); what it committed stays."""
        self.running.pop((part.revision, part.part), None)
        error = None if status == "stopped" else error_text(exc)
        set_part(self.engine, part.revision, part.part, status=status, error=error)
        set_status(self.engine, part.revision, status=status, error=error)
        sum_parts(self.engine, part.revision)


def _marked_running(row: dict[str, Any]) -> bool:
    """Whether a part's row (read with its revision's) shows its revision marked running."""
    return (
        row["revision_status"] == "running"
        and row["revision_error"] is None
        and row["revision_started_at"] is not None
    )


def _rest(done: int, end: int | None) -> int | None:
    return None if end is None else max(0, end - done)
