"""Where revision files come from: an S3 bucket (the only boto3 user) or a local folder."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import EllipsisType
from typing import Any, Protocol

from kmdb.errors import ConfigError, KmdbError, NotPrivate, SourceError
from kmdb.extract import private
from kmdb.extract.stash import Stash
from kmdb.settings import Settings

log = logging.getLogger(__name__)

CHUNK = 1 << 20
# A revision file is revisions/N.json, N a decimal number without leading zeros (so
# that 07.json and 7.json are never both revision 7); [0-9], not \d, which takes
# other scripts' digits too.
_REVISION = re.compile(r"(0|[1-9][0-9]*)\.json")
SHOWN_SKIPPED = 10


class Source(Protocol):
    """A KM export: revision files by number."""

    name: str

    def list_revisions(self) -> list[int] | None:
        """Revision numbers present, sorted; None when listing is not allowed."""

    def exists(self, revision: int) -> bool:
        """Whether revisions/N.json is there."""

    def size(self, revision: int) -> int | None:
        """The file's size in bytes, if known."""

    def chunks(self, revision: int, offset: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The file's bytes from offset up to end (or its end), in chunks."""

    def read_text(self, name: str) -> str | None:
        """A small file at the export's top (index.csv, status.csv), or None if missing."""


def revision_names(names: Iterable[str]) -> tuple[list[int], list[str]]:
    """The revision numbers among names found in revisions/ (N.json, directly in it),
    and the other names, each sorted."""
    found: set[int] = set()
    skipped: set[str] = set()
    for name in names:
        match = _REVISION.fullmatch(name)
        if match:
            found.add(int(match.group(1)))
        elif name:
            skipped.add(name)
    return sorted(found), sorted(skipped)


def _say_skipped(where: str, skipped: list[str]) -> None:
    if skipped:
        shown = ", ".join(skipped[:SHOWN_SKIPPED])
        more = f" and {len(skipped) - SHOWN_SKIPPED} more" if len(skipped) > SHOWN_SKIPPED else ""
        log.warning(
            "Skipping %s in %s that %s not named N.json (N a number without leading zeros): %s%s.",
            f"{len(skipped)} files" if len(skipped) > 1 else "a file",
            where,
            "are" if len(skipped) > 1 else "is",
            shown,
            more,
        )


def batch_sizes(size: int, span: int | None = None) -> Callable[[int, int], int]:
    """The sizes of a pipeline's batches of lines, asked for as it goes.

    The returned function takes (bytes, lines) read so far and gives the next
    batch's size. Sizes double from size/32 up to size, so that the first batch
    is soon parsed and loading starts; and when span (the bytes to read) is
    known they halve again near its end, so that the last batch's load, which
    nothing overlaps, is short too. On a revision of 10,000 lines the two ends
    took a third of the job's time with batches of 2,500.
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


def line_batches(
    chunks: Iterator[bytes],
    sizes: Callable[[int, int], int],
    offset: int = 0,
    line_no: int = 0,
) -> Iterator[tuple[int, list[bytes], int]]:
    """Lines (without their newline) in batches: (number of the batch's first line, its
    lines, byte offset after them). sizes(bytes, lines read so far) gives each batch's
    size; offset and line_no say where chunks start.

    Chunks are split with bytes.split, in C: botocore's iter_lines is quadratic
    on long lines, and splitting line by line in Python cost as much as parsing.
    A line longer than a chunk is kept in pieces until its end comes, then joined
    once: adding each chunk to what came before copied a 100 MB line 1,600 times.
    """
    size = sizes(0, 0)
    batch: list[bytes] = []
    first = line_no + 1
    end = offset
    begun: list[bytes] = []  # the pieces of a line whose end has not come yet
    for chunk in chunks:
        if not chunk:
            continue
        if chunk.find(b"\n") < 0:
            begun.append(chunk)
            continue
        if begun:
            begun.append(chunk)
            chunk = b"".join(begun)
            begun = []
        parts = chunk.split(b"\n")
        del chunk
        rest = parts.pop()
        if rest:
            begun.append(rest)
        while parts:
            room = size - len(batch)
            batch.extend(parts[:room])
            del parts[:room]
            if len(batch) >= size:
                end += sum(map(len, batch)) + len(batch)
                yield first, batch, end
                first, batch = first + len(batch), []
                size = sizes(end - offset, first - line_no - 1)
    tail = sum(map(len, batch)) + len(batch)
    if begun:  # a last line without its newline
        rest = b"".join(begun)
        batch.append(rest)
        tail += len(rest)
    if batch:
        yield first, batch, end + tail


# Spans of at most this many bytes are read ahead whole; no more than READ_AHEAD_BYTES
# are in flight or waiting at a time.
READ_AHEAD_SPAN = 4 << 20
READ_AHEAD_BYTES = 16 << 20
READ_AHEAD_THREADS = 4

Span = tuple[int, int, int | None]  # revision, first byte, end (None: the file's end)


class ReadAhead:
    """Small spans of revision files, read in threads before they are needed.

    A job of many small files would otherwise wait for each file's GET in turn:
    against S3 (or its emulator) that wait took longer than parsing the file.
    `spans` lists (revision, first byte, end) in the order chunks() will ask for
    them, with their sizes in bytes (None: unknown, never read ahead). With
    keep, whole files are handed to the source's `keep` for a later read.
    """

    def __init__(
        self, source: Source, spans: list[tuple[Span, int | None]], keep: bool = False
    ) -> None:
        self.source = source
        # A scan's whole files are kept for their import, where the source can (kmdb.stash).
        self._keep = getattr(source, "keep", None) if keep else None
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
        data = b"".join(self.source.chunks(*span))
        revision, offset, end = span
        if self._keep is not None and offset == 0 and end is None:
            self._keep(revision, data)
        return data

    def chunks(self, revision: int, offset: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The span's bytes, read ahead if it was listed, else streamed as the source does."""
        found = self._read.pop((revision, offset, end), None)
        if found is None:
            yield from self.source.chunks(revision, offset, end)
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


class LineStarts:
    """Where the first line at or after each of some byte offsets starts, found in passing.

    `wrap(chunks)` hands the chunks on unchanged; once they have all passed,
    `starts` holds, for each offset b, (offset of the first line that starts at
    or after b, its line number). A line starts at 0 and after every newline;
    line numbers count from 1.
    """

    def __init__(self, offsets: list[int]) -> None:
        self.offsets = sorted(offsets)
        self.starts: dict[int, tuple[int, int]] = {}
        self.size = 0

    def wrap(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        pending = list(self.offsets)
        ends_a_line = True
        position = 0  # file offset of the chunk's first byte
        newlines = 0  # newlines before it
        waiting: list[int] = []  # offsets whose line start lies after the next newline
        for chunk in chunks:
            end = position + len(chunk)
            if waiting:
                first = chunk.find(b"\n")
                if first >= 0:
                    for b in waiting:
                        self.starts[b] = (position + first + 1, newlines + 2)
                    waiting = []
            while pending and (pending[0] == 0 or pending[0] - 1 < end):
                b = pending.pop(0)
                if b == 0:
                    self.starts[b] = (0, 1)
                    continue
                at = b - 1 - position  # the byte before b, in this chunk
                before = newlines + chunk.count(b"\n", 0, max(at, 0))
                if chunk[at : at + 1] == b"\n":
                    self.starts[b] = (b, before + 2)
                    continue
                found = chunk.find(b"\n", at)
                if found >= 0:
                    self.starts[b] = (position + found + 1, before + 2)
                else:
                    waiting.append(b)
            newlines += chunk.count(b"\n")
            position = end
            if chunk:
                ends_a_line = chunk.endswith(b"\n")
            yield chunk
        self.size = position
        # Offsets after the last line start begin at the end of the file, with no line:
        # their number is the one after the last line's.
        lines = newlines + (0 if position == 0 or ends_a_line else 1)
        for b in waiting + pending:
            self.starts[b] = (position, lines + 1)


def matching_lines(
    chunks: Iterator[bytes], *patterns: re.Pattern[bytes]
) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of every line in which a pattern matches, the others skipped unsplit.

    The regex engine walks the bytes; Python only sees the few lines that match,
    which makes the alias scan several times cheaper than splitting every line.
    Patterns that start with a literal are searched for fastest, so several
    such patterns beat one alternation.
    """
    begun: list[bytes] = []  # the pieces of a line whose end has not come yet (joined once)
    line_no = 0  # lines counted before `begun`
    for chunk in chunks:
        if not chunk:
            continue
        if chunk.find(b"\n") < 0:
            begun.append(chunk)
            continue
        if begun:
            begun.append(chunk)
            data = b"".join(begun)
            begun = []  # freed before the line is cut out of data
        else:
            data = chunk
        end_of_lines = data.rfind(b"\n") + 1
        found = sorted(
            {m.start() for pattern in patterns for m in pattern.finditer(data, 0, end_of_lines)}
        )
        counted = 0
        for position in found:
            start = data.rfind(b"\n", 0, position) + 1
            if start < counted:  # a second match on a line already yielded
                continue
            stop = data.find(b"\n", position)
            line_no += data.count(b"\n", counted, start)
            yield line_no + 1, data[start:stop]
            line_no += 1
            counted = stop + 1
        line_no += data.count(b"\n", counted, end_of_lines)
        begun = [data[end_of_lines:]] if end_of_lines < len(data) else []
    rest = b"".join(begun)
    if rest and any(pattern.search(rest) for pattern in patterns):
        yield line_no + 1, rest


class LocalSource:
    """An export copied to a folder: FOLDER/revisions/N.json."""

    def __init__(self, folder: str) -> None:
        self.root = Path(folder)
        self.name = str(self.root)
        self.skipped: list[str] = []  # names in revisions/ that are not revisions, once listed
        if not self.root.is_dir():
            raise ConfigError(
                f"The export folder {folder} does not exist; pass --source with a folder "
                "that holds revisions/N.json, or s3://bucket."
            )

    def _path(self, revision: int) -> Path:
        return self.root / "revisions" / f"{revision}.json"

    def list_revisions(self) -> list[int] | None:
        folder = self.root / "revisions"
        if not folder.is_dir():
            return []
        with os.scandir(folder) as entries:  # d_type: no stat per file
            names = [e.name + ("/" if e.is_dir(follow_symlinks=False) else "") for e in entries]
        numbers, self.skipped = revision_names(names)
        _say_skipped(str(folder), self.skipped)
        return numbers

    def exists(self, revision: int) -> bool:
        return self._path(revision).is_file()

    def read_text(self, name: str) -> str | None:
        path = self.root / name
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None

    def size(self, revision: int) -> int | None:
        return self._path(revision).stat().st_size if self.exists(revision) else None

    def chunks(self, revision: int, offset: int = 0, end: int | None = None) -> Iterator[bytes]:
        return _file_chunks(self._path(revision), revision, self.name, offset, end)


def _file_chunks(
    path: Path, revision: int, name: str, offset: int = 0, end: int | None = None
) -> Iterator[bytes]:
    """A local file's bytes from offset up to end (or its end), in chunks."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise SourceError(f"Cannot read revision {revision} in {name}: {exc}.") from exc
    with handle:
        handle.seek(offset)
        left = None if end is None else end - offset
        while left is None or left > 0:
            chunk = handle.read(CHUNK if left is None else min(CHUNK, left))
            if not chunk:
                break
            if left is not None:
                left -= len(chunk)
            yield chunk


_clients: dict[tuple[tuple[str, str], ...], Any] = {}


def _s3_client() -> Any:
    """boto3's S3 client, made once per process for the AWS settings of the environment.

    Making one costs some 20 ms of CPU, which a worker would pay on every job.
    boto3's clients are safe to share between threads.
    """
    import boto3
    from botocore.config import Config

    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    if key not in _clients:
        # Adaptive retries back off on throttling (503 SlowDown) as well as on errors.
        # Checksums only where S3 requires them (as before botocore 1.36): an
        # object's CRC computed on every GET cost a tenth of a small file's read,
        # on both sides, and TLS already guards what crosses the network.
        config = Config(
            retries={"max_attempts": 10, "mode": "adaptive"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        _clients[key] = boto3.client("s3", config=config)
    return _clients[key]


class S3Source:
    """An export in a bucket: s3://bucket[/prefix]/revisions/N.json, read with boto3."""

    def __init__(self, url: str, settings: Settings) -> None:
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ConfigError("The source s3:// needs a bucket name, e.g. s3://my-km-export.")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.name = url
        self.settings = settings
        self.client = _s3_client()
        self._sizes: dict[str, int] = {}
        self.skipped: list[str] = []  # keys in revisions/ that are not revisions, once listed
        # KMDB_KEEP_FILES keeps every file on disk already.
        export = f"{self.client.meta.endpoint_url}|{bucket}|{self.prefix}"
        self.stash = None if settings.keep_files else Stash(settings.tmp_dir, export)

    def _key(self, revision: int) -> str:
        return f"{self.prefix}revisions/{revision}.json"

    def _error(self, exc: Exception, what: str) -> KmdbError:
        from botocore.exceptions import NoCredentialsError

        if isinstance(exc, NoCredentialsError):
            return ConfigError(
                f"No AWS credentials to read {self.name}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or run where an instance role applies."
            )
        return SourceError(f"Cannot {what} in {self.name}: {exc}.")

    def list_revisions(self) -> list[int] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        paginator = self.client.get_paginator("list_objects_v2")
        keys: list[str] = []
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}revisions/"):
                for item in page.get("Contents", []):
                    keys.append(item["Key"])
                    # Kept so that planning parts needs no request per file.
                    self._sizes[item["Key"]] = int(item["Size"])
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("AccessDenied", "403"):
                log.info("Listing %s is not allowed; probing revision numbers instead", self.name)
                return None
            if code == "NoSuchBucket":
                raise SourceError(
                    f"The bucket {self.bucket} does not exist; check --source or AWS_BUCKET."
                ) from None
            raise self._error(exc, "list revisions") from exc
        except BotoCoreError as exc:
            raise self._error(exc, "list revisions") from exc
        folder = f"{self.prefix}revisions/"
        numbers, self.skipped = revision_names(key.removeprefix(folder) for key in keys)
        _say_skipped(f"s3://{self.bucket}/{folder}", self.skipped)
        return numbers

    def _head(self, revision: int) -> dict | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(revision))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._error(exc, f"look up revision {revision}") from exc
        except BotoCoreError as exc:
            raise self._error(exc, f"look up revision {revision}") from exc

    def exists(self, revision: int) -> bool:
        return self._head(revision) is not None

    def read_text(self, name: str) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}{name}")["Body"]
            return body.read().decode("utf-8", errors="replace")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._error(exc, f"read {name}") from exc
        except BotoCoreError as exc:
            raise self._error(exc, f"read {name}") from exc

    def size(self, revision: int) -> int | None:
        if self._key(revision) in self._sizes:
            return self._sizes[self._key(revision)]
        head = self._head(revision)
        return int(head["ContentLength"]) if head else None

    def keep(self, revision: int, data: bytes) -> None:
        """Keep a small file that a scan read whole, for its import on this machine."""
        if self.stash is not None:
            self.stash.keep(revision, data)

    def _local_copy(self, revision: int) -> Path | None:
        """With KMDB_KEEP_FILES, the file is downloaded once to kmdb's private folder in
        KMDB_TMP_DIR and kept (None: not kept, read it from S3)."""
        if not self.settings.keep_files:
            return None
        # One folder per export, as for the stash.
        export = f"{self.client.meta.endpoint_url}|{self.bucket}|{self.prefix}"
        try:
            folder = private.folder(
                self.settings.tmp_dir, "files", hashlib.sha256(export.encode()).hexdigest()[:20]
            )
        except NotPrivate as exc:
            log.warning("Reading revision %s from S3, not keeping it: %s", revision, exc)
            return None
        path = folder / f"{revision}.json"
        size = self.size(revision)
        found = private.read_size(path)
        if found is not None and found == size:
            return path
        partial = path.with_name(f"{path.name}.{os.getpid()}.part")
        try:
            partial.unlink(missing_ok=True)
            with os.fdopen(private.open_private(partial), "wb") as out:
                self.client.download_fileobj(self.bucket, self._key(revision), out)
        except Exception as exc:
            partial.unlink(missing_ok=True)
            raise self._error(exc, f"download revision {revision}") from exc
        os.replace(partial, path)
        return path

    def chunks(self, revision: int, offset: int = 0, end: int | None = None) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        if end is not None and end <= offset:
            return
        kept = (
            self.stash.take(revision, offset, end, self._sizes.get(self._key(revision)))
            if self.stash is not None
            else None
        )
        if kept is not None:
            if kept:
                yield kept
            return
        local = self._local_copy(revision)
        if local is not None:
            yield from _file_chunks(local, revision, self.name, offset, end)
            return
        args = {"Bucket": self.bucket, "Key": self._key(revision)}
        if offset or end is not None:
            args["Range"] = f"bytes={offset}-{'' if end is None else end - 1}"
        try:
            body = self.client.get_object(**args)["Body"]
            yield from body.iter_chunks(CHUNK)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, f"read revision {revision}") from exc


def open_source(spec: str | None, settings: Settings) -> Source:
    """The source named by --source, KMDB_SOURCE or AWS_BUCKET."""
    spec = spec or settings.source
    if not spec:
        raise ConfigError(
            "No export to import: pass --source (a folder or s3://bucket), "
            "or set KMDB_SOURCE or AWS_BUCKET."
        )
    if spec.startswith("s3://"):
        return S3Source(spec, settings)
    return LocalSource(spec)


def find_new(
    source: Source,
    done: set[int],
    settings: Settings,
    start: int,
    unfinished: set[int] = frozenset(),
    listed: list[int] | None | EllipsisType = ...,
) -> list[int]:
    """Revision numbers to import, per the contract's "Finding work".

    `unfinished` are revisions begun earlier; where the bucket cannot be listed
    they are taken as they are, and probing starts after the last finished one.
    `listed` is the source's listing if the caller has it already.
    """
    if listed is ...:
        listed = source.list_revisions()
    if listed is not None:
        return [n for n in listed if n >= settings.min_revision and n not in done]
    # Listing is denied: probe upwards until LOOKAHEAD numbers in a row are missing.
    found = sorted(n for n in unfinished if n >= settings.min_revision and n < start)
    missing, n = 0, max(start, settings.min_revision)
    while missing < settings.revision_lookahead:
        if n in done:
            missing = 0
        elif source.exists(n):
            found.append(n)
            missing = 0
        else:
            missing += 1
        n += 1
    return found
