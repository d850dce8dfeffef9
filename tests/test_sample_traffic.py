"""kmdb.sample_traffic: the synthetic visitors of a KM site, as lines in receive order.

tests/test_sample.py checks the export written from them against the contract."""

from __future__ import annotations

import random
from itertools import islice

from kmdb.sample_traffic import BAD, BLANK, GOOD, Traffic, km_octal
from kmdb.transform.parse import Record, Rejection, decode_line, parse_line


def test_km_octal_writes_high_bytes_as_the_import_reads_them_back() -> None:
    assert km_octal("Café".encode()) == b"Caf\\303\\251"
    assert decode_line(km_octal("Café ™ 😀".encode())) == "Café ™ 😀"
    # A lone Windows-1252 byte, as KM received it from such a client.
    assert decode_line(b"Frigidman\\231") == "Frigidman™"
    # Backslashes before digits that are not escapes stay as they are.
    assert decode_line(b"C:\\\\Users\\\\201x") == "C:\\\\Users\\\\201x"


def _lines(seed: int, count: int, bad_every: int = 40) -> list[tuple[int, int, bytes]]:
    traffic = Traffic(random.Random(seed), seed, count, 500, bad_every, 1_350_000_000)
    return list(islice(traffic, count))


def test_a_seed_always_gives_the_same_lines_and_another_seed_others() -> None:
    assert _lines(3, 2_000) == _lines(3, 2_000)
    assert _lines(3, 2_000) != _lines(4, 2_000)


def test_lines_come_in_receive_order_from_the_start_time() -> None:
    times = [t for _, t, _ in _lines(5, 3_000)]
    assert times == sorted(times) and times[0] >= 1_350_000_000
    # About lines_per_revision lines per export of 12 hours.
    assert 3 * 12 * 3600 < times[-1] - 1_350_000_000 < 9 * 12 * 3600


def test_good_lines_follow_the_contract_and_bad_ones_break_it() -> None:
    lines = _lines(6, 5_000, bad_every=50)
    kinds = {GOOD: 0, BAD: 0, BLANK: 0}
    for kind, _, raw in lines:
        kinds[kind] += 1
        parsed = parse_line(raw)
        if kind == GOOD:
            assert isinstance(parsed, Record), (raw, parsed)
        elif kind == BAD:
            assert isinstance(parsed, Rejection), raw
        else:
            assert parsed is None and raw.strip() == b""
    assert kinds[BAD] > 40 and kinds[BLANK] >= 3 and kinds[GOOD] > 4_000
    assert all(kind != BAD for kind, _, _ in _lines(6, 5_000, bad_every=0))
