"""Write a synthetic KISSmetrics export, to try kmdb and to test its import.

The sample looks like a real KM Data Export (revisions/N.json, index.csv,
status.csv, hello.txt) and holds the awkward cases the import rules describe:
people who browse anonymously and later sign up, aliases that arrive a file
after the events they re-point, alias chains across files, ignored aliases,
KM's octal escapes and lone Windows-1252 bytes, exact duplicate lines, late
events, blank lines and a few lines the import must reject.

Everything comes from one ``random.Random(seed)``, so a seed always gives the
same bytes, and revisions are written one by one so memory stays flat.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

from kmdb.errors import SampleError
from kmdb.sample_traffic import BAD, BLANK, EXPORT_SECONDS, MAX_TIME, Line, Traffic, km_octal

__all__ = ["SampleStats", "km_octal", "write_sample"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleStats:
    """What write_sample wrote."""

    revisions: int
    lines: int  # all lines written, including blank and bad ones
    bad_lines: int  # lines that the contract says must be rejected
    blank_lines: int
    first_revision: int


def write_sample(
    folder: str | Path,
    lines: int = 10_000,
    *,
    seed: int = 0,
    lines_per_revision: int = 2_000,
    first_revision: int = 1,
    bad_every: int = 500,
    start_time: int = 1_351_187_280,
) -> SampleStats:
    """Write a realistic synthetic KM export to folder.

    Writes revisions/N.json (N from first_revision, up to lines_per_revision lines each),
    index.csv, status.csv and hello.txt; about one line in bad_every is one the import must
    reject (0: none). The same arguments always give the same bytes.
    """
    _check_arguments(lines, lines_per_revision, first_revision, bad_every, start_time)
    root = Path(folder)
    (root / "revisions").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    stream = iter(Traffic(rng, seed, lines, lines_per_revision, bad_every, start_time))
    index_rows: list[str] = []
    kinds: Counter[int] = Counter()
    for number, start in enumerate(range(0, lines, lines_per_revision), first_revision):
        chunk = list(islice(stream, min(lines_per_revision, lines - start)))
        index_rows.append(_write_revision(root, number, chunk))
        kinds.update(kind for kind, _, _ in chunk)
    _write_csvs(root, index_rows, first_revision + len(index_rows) - 1, chunk[-1][1])
    return SampleStats(len(index_rows), lines, kinds[BAD], kinds[BLANK], first_revision)


def _write_revision(root: Path, number: int, chunk: list[Line]) -> str:
    """Write one revision file in a single write; return its index.csv row."""
    name = f"revisions/{number}.json"
    (root / name).write_bytes(b"".join([line + b"\n" for _, _, line in chunk]))
    log.debug("wrote %s (%d lines)", name, len(chunk))
    return _index_row(name, chunk[0][1], chunk[-1][1])


def _check_arguments(
    lines: int, lines_per_revision: int, first_revision: int, bad_every: int, start_time: int
) -> None:
    if lines < 1:
        raise SampleError(f"lines must be at least 1, not {lines}")
    if lines_per_revision < 1:
        raise SampleError(f"lines_per_revision must be at least 1, not {lines_per_revision}")
    if first_revision < 0:
        raise SampleError(f"first_revision must not be negative, not {first_revision}")
    if bad_every < 0:
        raise SampleError(f"bad_every must be 0 (no bad lines) or more, not {bad_every}")
    # The receive clock runs about 12 hours per revision; leave it room to wander.
    end = start_time + 2 * EXPORT_SECONDS * (lines // lines_per_revision + 1)
    if start_time < 0 or end > MAX_TIME:
        raise SampleError(f"start_time {start_time} leaves times outside 1970..9999")


def _utc_minute(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M GMT")


def _index_row(name: str, first: int, last: int) -> str:
    return f"{name},{first},{last},{_utc_minute(first)},{_utc_minute(last)}\n"


def _write_csvs(root: Path, index_rows: list[str], last_revision: int, last_received: int) -> None:
    header = "filename,min_timestamp,max_timestamp,min_utc_date,max_utc_date\n"
    (root / "index.csv").write_text(header + "".join(index_rows), encoding="ascii")
    # KM counts revisions from 1 even when older files were deleted, as in "275,275" for 140..275.
    (root / "status.csv").write_text(
        "total_revisions,exported_revisions,max_exported_revision_timestamp,"
        "max_exported_revision_utc_date\n"
        f"{last_revision},{last_revision},{last_received},{_utc_minute(last_received)}\n",
        encoding="ascii",
    )
    (root / "hello.txt").write_text(
        "Hello from KISSmetrics!\n\n"
        "This bucket holds your Data Export. Each file in revisions/ is newline-delimited\n"
        "JSON, one record per line; index.csv lists the files and status.csv the progress.\n"
        "(A synthetic sample written by kmdb.sample.)\n",
        encoding="ascii",
    )
