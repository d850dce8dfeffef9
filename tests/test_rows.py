"""kmdb.transform.rows: ids, time literals and LOAD DATA fields of the rows written."""

from __future__ import annotations

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from kmdb.transform.rows import (
    ID_BASE,
    MAX_REVISION,
    escape,
    field,
    key_names,
    tsv_lines,
    tsv_rows,
    tuple_rows,
)


@hsettings(max_examples=500)
@given(st.integers(0, 253402300799))
def test_timestamps_are_utc_datetime_literals(t: int) -> None:
    import time

    from kmdb.transform.rows import timestamp

    assert timestamp(t) == time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


RECORDS = [
    (3, ("event", 86_400, "bob", "paid", None, (("plan", "gold"), ("note", "a\tb\\c")))),
    (4, ("set", 86_401, "anon", None, None, (("plan", "free"),))),
]
KEYS = {"paid": 1, "plan": 2, "note": 3}
USERS = {"bob": (10, None), "anon": (11, 10)}  # anon's person is bob's


def test_rows_as_tuples_and_as_load_data_lines_say_the_same() -> None:
    base = 7 * ID_BASE
    events, properties, seq = tuple_rows(RECORDS, base, 100, 0, KEYS, USERS)
    assert events == [(base + 3, "1970-01-02 00:00:00", 1, 10, 10)]
    assert properties == [
        (base + 101, "1970-01-02 00:00:00", 2, "gold", 10, base + 3, 10),
        (base + 102, "1970-01-02 00:00:00", 3, "a\tb\\c", 10, base + 3, 10),
        (base + 103, "1970-01-02 00:00:01", 2, "free", 10, None, 11),
    ]
    assert seq == 3
    lines = tsv_rows(RECORDS, base, 100, 0, KEYS, USERS)
    assert lines == (
        [tsv_lines("events", events)],
        tsv_lines("properties", properties).splitlines(keepends=True),
        3,
    )
    assert lines[1][1] == f"{base + 102}\t1970-01-02 00:00:00\t3\ta\\tb\\\\c\t10\t{base + 3}\t10\n"
    assert lines[1][2].endswith("\tfree\t10\t\\N\t11\n")


def test_property_ids_go_on_from_the_parts_offset_and_the_count_so_far() -> None:
    _, properties, seq = tuple_rows(RECORDS[1:], 0, 5_000, 41, KEYS, USERS)
    assert [p[0] for p in properties] == [5_042] and seq == 42


def test_only_names_not_known_yet_are_asked_for() -> None:
    assert key_names(RECORDS, {"plan": 2}) == {"paid", "note"}
    assert key_names(RECORDS, KEYS) == set()


def test_fields_escape_what_load_data_would_misread() -> None:
    assert [field(v) for v in (None, 5, "plain", "tab\there", "nul\0", "\\N")] == [
        "\\N",
        "5",
        "plain",
        "tab\\there",
        "nul\\0",
        "\\\\N",
    ]
    assert escape("line\nnext") == "line\\nnext"
    assert tsv_lines("keys", [(1, "a\tb"), (2, None)]) == "1\ta\\tb\n2\t\\N\n"


def test_the_largest_revision_still_gives_ids_a_bigint_holds() -> None:
    assert (MAX_REVISION + 1) * ID_BASE - 1 <= 2**63 - 1 < (MAX_REVISION + 2) * ID_BASE
