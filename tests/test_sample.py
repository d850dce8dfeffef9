"""Tests for kmdb.sample: the synthetic export must follow the import contract it tests."""

from __future__ import annotations

import codecs
import csv
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from kmdb.sample import SampleStats, write_sample

MAX_TIME = 253_402_300_799

# An escaped backslash is skipped whole, so `\\201` stays a backslash and "201".
_ESCAPES = re.compile(rb"\\\\|(?:\\[23][0-7]{2})+")


def _cp1252_fallback(error: UnicodeDecodeError) -> tuple[str, int]:
    bad = error.object[error.start : error.end]
    return bad.decode("cp1252", errors="replace"), error.end


codecs.register_error("test-sample-cp1252", _cp1252_fallback)


def _decode_run(match: re.Match[bytes]) -> bytes:
    if match[0] == b"\\\\":
        return match[0]
    run = bytes(int(octal, 8) for octal in match[0].split(b"\\")[1:])
    return run.decode("utf-8", errors="test-sample-cp1252").encode()


def decode_km(line: bytes) -> str:
    """The contract's rules 2 and 3: octal runs are UTF-8 or Windows-1252, bad bytes U+FFFD."""
    return _ESCAPES.sub(_decode_run, line).decode("utf-8", errors="replace")


def _identity(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and value != "")


def _time(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return value.isascii() and value.isdigit() and int(value) <= MAX_TIME
    if isinstance(value, int | float):
        return 0 <= math.floor(value) <= MAX_TIME
    return False


def verdict(line: bytes) -> str:
    """What the contract makes of one line: blank, bad, alias, event or set."""
    if not line.strip():
        return "blank"
    try:
        record = orjson.loads(decode_km(line))
    except orjson.JSONDecodeError:
        return "bad"
    if not isinstance(record, dict) or not _identity(record.get("_p")):
        return "bad"
    if not _time(record.get("_t")):
        return "bad"
    if record.get("_p2") is not None:
        return "alias" if _identity(record["_p2"]) else "bad"
    if record.get("_n") is not None:
        name = record["_n"]
        return "event" if isinstance(name, str) and name else "bad"
    return "set"


def _revision_files(folder: Path) -> list[Path]:
    return sorted((folder / "revisions").glob("*.json"), key=lambda path: int(path.stem))


def _lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


def _all_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleStats]:
    folder = tmp_path_factory.mktemp("sample")
    return folder, write_sample(folder, 5_000, seed=7, lines_per_revision=1_000, first_revision=140)


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    write_sample(tmp_path / "a", 3_000, seed=3, lines_per_revision=700)
    write_sample(tmp_path / "b", 3_000, seed=3, lines_per_revision=700)
    write_sample(tmp_path / "c", 3_000, seed=4, lines_per_revision=700)
    a, b, c = (_all_files(tmp_path / name) for name in "abc")
    assert a == b
    assert a.keys() == c.keys()
    assert a != c


def test_files_and_numbering(sample: tuple[Path, SampleStats]) -> None:
    folder, stats = sample
    assert stats.revisions == 5
    assert stats.first_revision == 140
    files = _revision_files(folder)
    assert [int(path.stem) for path in files] == list(range(140, 145))
    assert sum(len(_lines(path)) for path in files) == stats.lines == 5_000
    assert all(len(_lines(path)) == 1_000 for path in files)
    assert (folder / "hello.txt").read_text().strip()


def test_last_revision_is_partial(tmp_path: Path) -> None:
    stats = write_sample(tmp_path, 2_500, lines_per_revision=1_000)
    files = _revision_files(tmp_path)
    assert stats.revisions == 3
    assert [len(_lines(path)) for path in files] == [1_000, 1_000, 500]


def test_index_and_status(sample: tuple[Path, SampleStats]) -> None:
    folder, _ = sample
    with (folder / "index.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["filename"] for row in rows] == [f"revisions/{n}.json" for n in range(140, 145)]
    previous_max = 0
    for row in rows:
        low, high = int(row["min_timestamp"]), int(row["max_timestamp"])
        assert previous_max <= low <= high
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d GMT", row["min_utc_date"])
        previous_max = high
    with (folder / "status.csv").open(newline="") as f:
        (status,) = list(csv.DictReader(f))
    assert status["total_revisions"] == status["exported_revisions"] == "144"
    assert status["max_exported_revision_timestamp"] == rows[-1]["max_timestamp"]


def test_index_example_date_format(tmp_path: Path) -> None:
    write_sample(tmp_path, 10, start_time=1_351_187_402)
    row = (tmp_path / "index.csv").read_text().splitlines()[1].split(",")
    assert row[3] == "2012-10-25 17:50 GMT"


def test_every_line_valid_except_bad_ones(sample: tuple[Path, SampleStats]) -> None:
    folder, stats = sample
    kinds = Counter(verdict(line) for path in _revision_files(folder) for line in _lines(path))
    assert kinds["bad"] == stats.bad_lines > 0
    assert kinds["blank"] == stats.blank_lines > 0
    assert kinds["alias"] > 0 and kinds["event"] > 0 and kinds["set"] > 0


def test_no_bad_lines_when_disabled(tmp_path: Path) -> None:
    stats = write_sample(tmp_path, 3_000, bad_every=0)
    kinds = Counter(verdict(line) for path in _revision_files(tmp_path) for line in _lines(path))
    assert stats.bad_lines == kinds["bad"] == 0


def test_octal_escapes_are_well_formed(sample: tuple[Path, SampleStats]) -> None:
    folder, _ = sample
    good = [
        line
        for path in _revision_files(folder)
        for line in _lines(path)
        if verdict(line) in ("alias", "event", "set")
    ]
    text = b"\n".join(good)
    runs = re.findall(rb"(?<!\\)(?:\\\\)*((?:\\[23][0-7]{2})+)", text)
    assert runs
    decoded = {decode_km(run) for run in runs}
    assert {"é", "ü", "™"} <= decoded
    # Only the octal form of backslash + digits is an escape; every run must decode cleanly.
    assert "\ufffd" not in decode_km(text)


def _records(folder: Path) -> list[tuple[int, dict[str, Any]]]:
    records = []
    for revision, path in enumerate(_revision_files(folder)):
        for line in _lines(path):
            if verdict(line) in ("alias", "event", "set"):
                records.append((revision, orjson.loads(decode_km(line))))
    return records


def test_realistic_content(sample: tuple[Path, SampleStats]) -> None:
    folder, _ = sample
    records = _records(folder)
    values = {str(v) for _, r in records for v in r.values()}
    names = {r.get("_n") for _, r in records}
    assert {"visited site", "signed up", "viewed product", "purchased", "billed"} <= names
    assert {"Café", "São Paulo", "München", "Frigidman™"} & values
    assert any(isinstance(r["_p"], int) for _, r in records)
    assert any(isinstance(r["_t"], str) for _, r in records)
    assert any(isinstance(r["_t"], float) for _, r in records)
    assert any(isinstance(v, float) for _, r in records for v in r.values())
    assert any(isinstance(v, list) for _, r in records for v in r.values())
    assert any(v is None for _, r in records for v in r.values())
    assert any("_k" in r or "_c" in r for _, r in records)


def test_duplicate_lines_and_late_events(sample: tuple[Path, SampleStats]) -> None:
    folder, _ = sample
    lines = [line for path in _revision_files(folder) for line in _lines(path)]
    assert any(a == b and a.strip() for a, b in zip(lines, lines[1:], strict=False))
    with (folder / "index.csv").open(newline="") as f:
        lows = [int(row["min_timestamp"]) for row in csv.DictReader(f)]
    weeks = 7 * 86_400
    late = [r for rev, r in _records(folder) if int(float(r["_t"])) < lows[rev] - weeks]
    assert late


def test_aliases_span_files_and_include_ignored_ones(sample: tuple[Path, SampleStats]) -> None:
    folder, _ = sample
    first_seen: dict[str, int] = {}
    spanning = numeric = self_alias = 0
    pairs: Counter[frozenset[str]] = Counter()
    for revision, record in _records(folder):
        p = str(record["_p"])
        if "_p2" not in record:
            first_seen.setdefault(p, revision)
            continue
        p2 = str(record["_p2"])
        spanning += min(first_seen.get(p, revision), first_seen.get(p2, revision)) < revision
        numeric += p.isdigit() and p2.isdigit()
        self_alias += p == p2
        pairs[frozenset((p, p2))] += 1
    assert spanning and numeric and self_alias
    assert max(pairs.values()) > 1


@pytest.mark.parametrize(
    "arguments",
    [{"lines": 0}, {"lines_per_revision": 0}, {"bad_every": -1}, {"start_time": -1}],
)
def test_bad_arguments(tmp_path: Path, arguments: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        write_sample(tmp_path, **arguments)
