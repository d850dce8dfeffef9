"""kmdb.pipeline.chunks: a job's parts read as chunks of lines, in batches that ramp up and down."""

from __future__ import annotations

from kmdb.extract.framing import line_batches
from kmdb.pipeline.chunks import batch_sizes


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
