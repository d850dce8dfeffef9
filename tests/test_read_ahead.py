"""kmdb.extract.read_ahead: small spans of revision files read in threads before they are asked for."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from kmdb.extract.read_ahead import READ_AHEAD_BYTES, READ_AHEAD_SPAN, ReadAhead
from tests.helpers import wait_for


class Recorded:
    """A source of files of known bytes, that records what it is asked to read, and in which thread."""

    name = "recorded"

    def __init__(self, files: dict[int, bytes], broken: frozenset[int] = frozenset()) -> None:
        self.files = files
        self.broken = broken
        self.reads: list[tuple[int, int, int | None, str]] = []
        self.kept: dict[int, bytes] = {}
        self.lock = threading.Lock()

    def chunks(self, revision: int, offset: int = 0, end: int | None = None) -> Iterator[bytes]:
        with self.lock:
            self.reads.append((revision, offset, end, threading.current_thread().name))
        if revision in self.broken:
            raise OSError(f"revision {revision} is gone")
        data = self.files[revision][offset:end]
        yield from (data[i : i + 3] for i in range(0, len(data), 3))

    def keeping(self, revision: int, size: int) -> Kept:
        return Kept(self.kept, revision)


class Kept:
    """What a source keeps of a file as it is read: in a dict, once all of it went by."""

    def __init__(self, kept: dict[int, bytes], revision: int) -> None:
        self.kept, self.revision, self.pieces = kept, revision, list[bytes]()

    def write(self, data: bytes) -> None:
        self.pieces.append(data)

    def __enter__(self) -> Kept:
        return self

    def __exit__(self, failed: object, *exc: object) -> None:
        if failed is None:
            self.kept[self.revision] = b"".join(self.pieces)


def test_spans_are_read_ahead_whole_in_threads_and_given_in_one_piece() -> None:
    source = Recorded({1: b"first file\n", 2: b"second\n"})
    spans = [((1, 0, None), 11), ((2, 0, None), 7)]
    with ReadAhead(source, spans) as reader:
        assert list(reader.chunks(1)) == [b"first file\n"]
        assert list(reader.chunks(2)) == [b"second\n"]
    assert {thread for *_, thread in source.reads} != {threading.current_thread().name}
    assert all(thread.startswith("kmdb-read") for *_, thread in source.reads)


def test_big_spans_unknown_sizes_and_spans_not_listed_are_streamed() -> None:
    source = Recorded({1: b"x" * 10, 2: b"y" * 10, 3: b"z" * 10})
    spans = [((1, 0, None), READ_AHEAD_SPAN + 1), ((2, 0, None), None)]
    with ReadAhead(source, spans) as reader:
        assert source.reads == []  # nothing read ahead
        for revision in (1, 2, 3):
            chunks = list(reader.chunks(revision, 2, 8))
            assert b"".join(chunks) == source.files[revision][2:8] and len(chunks) == 2
    assert [thread for *_, thread in source.reads] == [threading.current_thread().name] * 3


def test_a_file_that_cannot_be_read_fails_where_it_is_asked_for() -> None:
    source = Recorded({1: b"fine\n"}, broken=frozenset({2}))
    with ReadAhead(source, [((2, 0, None), 5), ((1, 0, None), 5)]) as reader:
        with pytest.raises(OSError, match="revision 2 is gone"):
            list(reader.chunks(2))
        assert list(reader.chunks(1)) == [b"fine\n"]


def test_no_more_than_the_budget_is_read_ahead_at_a_time() -> None:
    # Spans of the biggest size read ahead: the budget holds this many at a time.
    fit = READ_AHEAD_BYTES // READ_AHEAD_SPAN
    source = Recorded({n: b"" for n in range(1, fit + 3)})
    spans = [((n, 0, None), READ_AHEAD_SPAN) for n in range(1, fit + 3)]
    with ReadAhead(source, spans) as reader:
        wait_for(lambda: len(source.reads) == fit, timeout=30)
        list(reader.chunks(1))  # one given back: room for one more
        wait_for(lambda: len(source.reads) == fit + 1, timeout=30)
        assert [revision for revision, *_ in sorted(source.reads)] == list(range(1, fit + 2))


def test_whole_files_are_handed_to_the_sources_keeping_and_parts_are_not() -> None:
    source = Recorded({1: b"whole\n", 2: b"in parts\n"})
    with ReadAhead(source, [((1, 0, None), 6), ((2, 0, 3), 3)], keep=True) as reader:
        assert list(reader.chunks(1)) == [b"whole\n"]
        assert list(reader.chunks(2, 0, 3)) == [b"in "]
    assert source.kept == {1: b"whole\n"}
