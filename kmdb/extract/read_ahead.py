"""Reading small spans of revision files in threads, before the passes ask for them."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from kmdb.extract.export import Source

# Spans of at most this many bytes are read ahead whole; no more than READ_AHEAD_BYTES
# are in flight or waiting at a time.
READ_AHEAD_SPAN = 4 << 20
READ_AHEAD_BYTES = 16 << 20
READ_AHEAD_THREADS = 4

Span = tuple[int, int, int | None]  # revision, first byte, end (None: the file's end)


class ReadAhead:
    """Small spans of revision files, read in threads before they are needed.

    A job of many small files would otherwise wait for each file's GET in turn:
    against S3 that wait is longer than parsing the file.
    `spans` lists (revision, first byte, end) in the order chunks() will ask for
    them, with their sizes in bytes (None: unknown, never read ahead). With
    keep, whole files of known size, read ahead or streamed, go through the
    source's `keeping` as they are read, for a later read.
    """

    def __init__(
        self, source: Source, spans: list[tuple[Span, int | None]], keep: bool = False
    ) -> None:
        self.source = source
        # A scan's whole files are kept for their import, where the source can (kmdb.extract.stash).
        self._keeping = getattr(source, "keeping", None) if keep else None
        self._sizes = {span: size for span, size in spans if size is not None}
        self._waiting = deque(
            (span, size) for span, size in spans if size is not None and size <= READ_AHEAD_SPAN
        )
        self._read: dict[Span, tuple[Future[bytes], int]] = {}
        self._held = 0
        self._pool = ThreadPoolExecutor(READ_AHEAD_THREADS, thread_name_prefix="kmdb-read")
        self._fill()

    def _fill(self) -> None:
        while self._waiting and (
            not self._read or self._held + self._waiting[0][1] <= READ_AHEAD_BYTES
        ):
            span, size = self._waiting.popleft()
            self._read[span] = (self._pool.submit(self._whole, span), size)
            self._held += size

    def _whole(self, span: Span) -> bytes:
        return b"".join(self._read_keeping(*span))

    def _read_keeping(self, revision: int, offset: int, end: int | None) -> Iterator[bytes]:
        """The source's chunks of the span; a whole file's also kept as they go by."""
        size = self._sizes.get((revision, offset, end))
        keeping = (
            self._keeping(revision, size)
            if self._keeping is not None and offset == 0 and end is None and size
            else None
        )
        if keeping is None:
            yield from self.source.chunks(revision, offset, end)
            return
        with keeping:
            for piece in self.source.chunks(revision, offset, end):
                keeping.write(piece)
                yield piece

    def chunks(self, revision: int, offset: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The span's bytes, read ahead if it was listed, else streamed as the source does."""
        found = self._read.pop((revision, offset, end), None)
        if found is None:
            yield from self._read_keeping(revision, offset, end)
            return
        future, size = found
        try:
            data = future.result()  # a failure to read it is raised here, as streaming would
        finally:
            self._held -= size
            self._fill()
        if data:
            yield data

    def close(self) -> None:
        """Stop reading ahead; what was read and not asked for is dropped."""
        self._waiting.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._read.clear()

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
