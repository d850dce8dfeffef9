"""kmdb.extract.framing: revision files split into lines, whatever the chunks they come in."""

from __future__ import annotations

import re
from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from kmdb.extract.framing import LineStarts, line_batches, matching_lines

line_text = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"."))
file_lines = st.lists(
    st.one_of(
        line_text, st.sampled_from([b'{"_p":"a","_p2":"b"}', b'{"x":"\\u00e9"}', b"", b"\r"])
    ),
    max_size=30,
)


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def _lines(data: bytes) -> list[bytes]:
    """What a revision file holds, line by line (a last line may lack its newline)."""
    return data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n") if data else []


@settings(max_examples=300)
@given(
    file_lines,
    st.booleans(),
    st.lists(st.integers(0, 10_000), max_size=8),
    st.integers(1, 7),
)
def test_line_batches_are_the_same_whatever_the_chunks(
    body: list[bytes], final_newline: bool, cuts: list[int], size: int
) -> None:
    data = b"\n".join(body) + (b"\n" if final_newline and body else b"")
    got = list(line_batches(iter(_chunked(data, cuts)), lambda _b, _n: size))
    assert [raw for _, batch, _ in got for raw in batch] == _lines(data)
    assert all(0 < len(batch) <= size for _, batch, _ in got)
    assert [first for first, _, _ in got] == list(range(1, len(_lines(data)) + 1, size))
    # Each offset is where the next batch starts: resuming there gives the rest.
    for i, (first, batch, offset) in enumerate(got):
        rest = list(
            line_batches(iter([data[offset:]]), lambda _b, _n: size, offset, first + len(batch) - 1)
        )
        assert rest == got[i + 1 :]


PATTERNS = (re.compile(rb"_p2"), re.compile(rb"\\u"))


@settings(max_examples=300)
@given(file_lines, st.booleans(), st.lists(st.integers(0, 10_000), max_size=8))
def test_matching_lines_equals_filtering_every_line(
    body: list[bytes], final_newline: bool, cuts: list[int]
) -> None:
    data = b"\n".join(body) + (b"\n" if final_newline and body else b"")
    every = list(enumerate(_lines(data), start=1))
    wanted = [(n, raw) for n, raw in every if any(p.search(raw) for p in PATTERNS)]
    assert list(matching_lines(iter(_chunked(data, cuts)), *PATTERNS)) == wanted


def test_a_line_with_two_matches_comes_once() -> None:
    data = b'x\n{"_p2":"a","k":"\\u00e9 _p2"}\ny\n'
    assert list(matching_lines(iter([data]), *PATTERNS)) == [(2, b'{"_p2":"a","k":"\\u00e9 _p2"}')]


@settings(max_examples=300)
@given(
    file_lines,
    st.booleans(),
    st.lists(st.integers(0, 10_000), max_size=8),
    st.lists(st.integers(0, 400), max_size=6),
)
def test_line_starts_are_found_whatever_the_chunks(
    body: list[bytes], final_newline: bool, cuts: list[int], offsets: list[int]
) -> None:
    data = b"\n".join(body) + (b"\n" if final_newline and body else b"")
    starts = [0] + [i + 1 for i, byte in enumerate(data) if byte == ord("\n") and i + 1 < len(data)]
    wanted_offsets = sorted({0, *offsets})
    finder = LineStarts(wanted_offsets)
    assert b"".join(finder.wrap(iter(_chunked(data, cuts)))) == data
    lines_in_file = len(_lines(data))
    for b in wanted_offsets:
        after = [(s, n) for n, s in enumerate(starts, start=1) if s >= b and s < len(data)]
        if data and after:
            assert finder.starts[b] == after[0]
        else:  # nothing starts at or after b: the end of the file, numbered after the last line
            assert finder.starts[b] == (len(data), lines_in_file + 1)
    assert finder.size == len(data)


def _frame_long_line(size: int) -> tuple[float, int]:
    """CPU seconds and peak bytes allocated to frame one line of size bytes from 64 KB
    chunks, with both framings (the import's and the scan's)."""
    import time
    import tracemalloc

    piece = 64 << 10
    line = b"x" * size + b"\n"

    def chunks() -> Iterator[bytes]:
        for at in range(0, len(line), piece):
            yield line[at : at + piece]

    tracemalloc.start()
    try:
        started = time.process_time()
        got = [len(lines[0]) for _, lines, _ in line_batches(chunks(), lambda *_: 10)]
        found = list(matching_lines(chunks(), re.compile(rb"x$")))
        took = time.process_time() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == [size] and [(n, len(text)) for n, text in found] == [(1, size)]
    return took, peak


def test_framing_a_long_line_is_linear_in_its_length() -> None:
    """Each chunk used to be added to all that came before: a 100 MB line took seconds."""
    small, large = 8 << 20, 32 << 20
    small_time = min(_frame_long_line(small)[0] for _ in range(3))
    large_time, large_peak = min(_frame_long_line(large) for _ in range(3))
    # Linear: four times the bytes, some four times the work (quadratic: sixteen).
    assert large_time <= 8 * max(small_time, 0.005), (small_time, large_time)
    assert large_peak <= 2.5 * large, large_peak  # the pieces and the line, not more
