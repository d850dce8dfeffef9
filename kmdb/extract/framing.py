"""Cutting a revision file's bytes into lines, as they stream in (pure: no I/O).

The passes never hold a whole file: they read it in chunks and cut lines out of
them here, in batches (line_batches), or pick out only the lines a pattern
matches (matching_lines), while LineStarts notes where the parts' first lines
begin in passing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import NamedTuple


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


class LineStart(NamedTuple):
    """Where a line starts: its byte offset in the file, and its number (from 1)."""

    byte: int
    line: int


class LineStarts:
    """Where the first line at or after each of some byte offsets starts, found in passing.

    `wrap(chunks)` hands the chunks on unchanged; once they have all passed,
    `starts` holds, for each offset b, (offset of the first line that starts at
    or after b, its line number). A line starts at 0 and after every newline;
    line numbers count from 1.
    """

    def __init__(self, offsets: list[int]) -> None:
        self.offsets = sorted(offsets)
        self.starts: dict[int, LineStart] = {}
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
                        self.starts[b] = LineStart(position + first + 1, newlines + 2)
                    waiting = []
            while pending and (pending[0] == 0 or pending[0] - 1 < end):
                b = pending.pop(0)
                if b == 0:
                    self.starts[b] = LineStart(0, 1)
                    continue
                at = b - 1 - position  # the byte before b, in this chunk
                before = newlines + chunk.count(b"\n", 0, max(at, 0))
                if chunk[at : at + 1] == b"\n":
                    self.starts[b] = LineStart(b, before + 2)
                    continue
                found = chunk.find(b"\n", at)
                if found >= 0:
                    self.starts[b] = LineStart(position + found + 1, before + 2)
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
            self.starts[b] = LineStart(position, lines + 1)


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
