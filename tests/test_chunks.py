"""kmdb.pipeline.chunks: a job's parts read as chunks of lines, in batches that ramp up and down."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text

from kmdb.extract.framing import line_batches
from kmdb.extract.local import LocalSource
from kmdb.load.database import create_schema
from kmdb.load.ledger import revision_states, set_part, set_status
from kmdb.load.locks import LockSet
from kmdb.pipeline.chunks import ChunkStream, batch_sizes
from kmdb.pipeline.scan_pass import scan_revisions
from kmdb.pipeline.steps import Importer
from kmdb.settings import Settings
from tests.helpers import line, write_export


def _sizes(size: int, span: int | None, line_bytes: int, count: int) -> list[int]:
    """The batch sizes asked for while reading count lines of line_bytes bytes each."""
    sizes, read = batch_sizes(size, span), 0
    got: list[int] = []
    while read < count:
        got.append(sizes(read * line_bytes, read))
        read += got[-1]
    return got


def test_batches_ramp_up_to_the_batch_size_and_down_near_the_end() -> None:
    # Without a known end they double from a 32nd of the size and stay there.
    assert _sizes(20_000, None, 100, 60_000)[:7] == [
        625,
        1_250,
        2_500,
        5_000,
        10_000,
        20_000,
        20_000,
    ]
    assert _sizes(3, None, 10, 5) == [1, 2, 3]
    # Near a known end they halve again, so that the last load is short too.
    got = _sizes(20_000, 100 * 10_000, 100, 10_000)
    assert got == [625, 1_250, 2_500, 2_812, 1_406, 703, 20_000]
    assert sum(got[:-1]) == 9_296  # the last batch holds the 704 lines left
    data = b"".join(b"%d\n" % i for i in range(40))
    got_lines = list(line_batches(iter([data]), batch_sizes(16, len(data))))
    assert [first for first, _, _ in got_lines][:2] == [1, 2]
    assert sum(len(batch) for _, batch, _ in got_lines) == 40
    assert len(got_lines[-1][1]) < 16


def test_a_stream_marks_its_revisions_running_at_once_and_its_parts_with_their_first_chunk(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    write_export(
        folder,
        {n: [line(_n="a", _p=f"u{n}", _t=n), line(_n="b", _p="u", _t=n)] for n in (1, 2)},
    )
    source = LocalSource(str(folder))
    create_schema(engine)
    scan_revisions(engine, source, [1, 2], settings)
    # Revision 2's part failed in an earlier attempt.
    set_part(engine, 2, 0, status="failed", error="OSError: gone")
    set_status(engine, 2, status="failed", error="OSError: gone")
    states = revision_states(engine, [1, 2])
    with LockSet(engine) as locks:
        stream = ChunkStream(engine, source, [(1, 0), (2, 0)], locks, states)
        first = next(stream.chunks(32))  # a first chunk of one line: revision 1's first
        with engine.connect() as conn:
            revisions = conn.execute(
                text("SELECT number, status, error, started_at FROM revisions ORDER BY number")
            ).all()
            parts = conn.execute(
                text("SELECT revision, status, error FROM revision_parts ORDER BY revision")
            ).all()
        # kmdb-status counts revisions by status: both show running before any chunk
        # commits. A part is marked running by its first chunk's commit, unless an
        # earlier attempt left it failed: then the stream clears that at once.
        assert [(n, status, error) for n, status, error, _ in revisions] == [
            (1, "running", None),
            (2, "running", None),
        ]
        assert all(started is not None for *_, started in revisions)
        assert [tuple(row) for row in parts] == [(1, "pending", None), (2, "running", None)]
        importer = Importer(engine, settings)
        importer.commit(importer.prepare(first))
        with engine.connect() as conn:
            statuses = conn.execute(
                text("SELECT revision, status FROM revision_parts ORDER BY revision")
            ).all()
        assert [tuple(row) for row in statuses] == [(1, "running"), (2, "running")]
