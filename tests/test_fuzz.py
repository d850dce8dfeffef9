"""Fuzzing the whole import path (issue 4), on SQLite and on the real MariaDB.

Revision files mix random bytes, truncated JSON, octal escapes, raw high bytes,
NUL, deep nesting and every odd type of `_p`/`_p2`/`_t`/`_n`; they go through
both passes (`import_inline`) on a fresh database per example. Nothing may
raise; every non-blank line must be either a rejected line (with its revision,
line number, reason and text) or rows that match the model in tests/model.py.
Lines built from a dict are also checked against a small oracle written here
from the contract alone. A second group round-trips awkward names and values
(tab, newline, backslash, `\\N`, NUL, 4-byte UTF-8, 255-char cuts) through the
bulk-load path: LOAD DATA LOCAL on MariaDB, executemany on SQLite.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pymysql
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from kmdb.extract.local import LocalSource
from kmdb.load.database import create_schema
from kmdb.load.engine import make_engine
from kmdb.load.ledger import Counts
from kmdb.pipeline.discovery import new_revisions
from kmdb.pipeline.inline import import_inline, summary
from kmdb.settings import Settings
from kmdb.transform.parse import Record, Rejection, decode_line, parse_line
from kmdb.transform.rows import ID_BASE
from tests.helpers import drop_mysql_database, mysql_admin, new_mysql_database, unavailable
from tests.model import assert_same, dump, expected, read_export

MAX_T = 253402300799  # 9999-12-31 23:59:59 UTC
RESERVED = {"_n", "_p", "_p2", "_t", "_k", "_d"}
REJECTED_TEXT = 65_536  # characters of a rejected line that are kept
FUZZ = hsettings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


# --- A fresh database per example ----------------------------------------------------


@pytest.fixture(params=["sqlite", "mysql"])
def backend(request: pytest.FixtureRequest) -> str:
    """Each test using it runs on SQLite and on MariaDB (skipped when MariaDB is down)."""
    if request.param == "mysql":
        try:
            mysql_admin().close()
        except pymysql.MySQLError as exc:
            unavailable("MariaDB", exc)
    return request.param


@pytest.fixture
def mariadb() -> str:
    """MariaDB only (skipped when it is down)."""
    try:
        mysql_admin().close()
    except pymysql.MySQLError as exc:
        unavailable("MariaDB", exc)
    return "mysql"


@contextmanager
def fresh_database(
    backend: str, folder: Path, batch_size: int = 50_000
) -> Iterator[tuple[Engine, Settings]]:
    """A new, empty database (a SQLite file, or a MariaDB database dropped after)."""
    name = None
    if backend == "sqlite":
        url = f"sqlite:///{folder / 'kmdb.sqlite3'}"
    else:
        name, url = new_mysql_database("kmdb_fuzz")
    settings = Settings(database_url=url, batch_size=batch_size, tmp_dir=str(folder / "tmp"))
    engine = make_engine(settings)
    try:
        yield engine, settings
    finally:
        engine.dispose()
        if name is not None:
            drop_mysql_database(name)


def write_files(folder: Path, files: dict[int, list[bytes]], final_newline: bool) -> None:
    (folder / "revisions").mkdir(parents=True, exist_ok=True)
    for number, lines in files.items():
        data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
        (folder / "revisions" / f"{number}.json").write_bytes(data)


def import_folder(engine: Engine, settings: Settings, folder: Path) -> tuple[list[int], Counts]:
    """Both passes over every new revision of the folder, as kmdb-import runs them inline."""
    source = LocalSource(str(folder))
    create_schema(engine)
    todo = new_revisions(engine, source, settings)
    counts, _ = import_inline(engine, source, settings, todo)
    return todo, counts


def quoted(engine: Engine, sql: str) -> str:
    """Hand-written SQL with `keys` and `key` quoted for the dialect."""
    q = '"' if engine.dialect.name == "sqlite" else "`"
    return sql.replace("KEYS", f"{q}keys{q}").replace("KEY", f"{q}key{q}")


# --- An oracle for lines built from a dict, from the contract alone ------------------


def _identity(value: Any) -> str | None:
    if type(value) is str and value != "":
        return value[:255]
    if type(value) is int:
        return str(value)[:255]
    return None


def _time(value: Any) -> int | None:
    if type(value) is int:
        t = value
    elif type(value) is float:
        if not value >= 0:  # negative floors below 1970; NaN never gets here
            return None
        t = math.floor(value)
    elif type(value) is str and value != "" and all(c in "0123456789" for c in value):
        digits = value.lstrip("0") or "0"
        if len(digits) > 12:
            return None
        t = int(digits)
    else:
        return None
    return t if 0 <= t <= MAX_T else None


def _value(value: Any) -> str:
    if type(value) is str:
        return value[:255]
    if value is True or value is False:
        return "true" if value else "false"
    return orjson.dumps(value).decode()[:255]


def oracle(obj: dict[str, Any]) -> tuple | None:
    """What a JSON object must become: None when it is to be rejected."""
    p = _identity(obj.get("_p"))
    t = _time(obj.get("_t")) if "_t" in obj else None
    if p is None or t is None:
        return None
    if obj.get("_p2") is not None:
        p2 = _identity(obj["_p2"])
        return None if p2 is None else ("alias", t, p, p2)
    n = obj.get("_n")
    if n is not None and (type(n) is not str or n == ""):
        return None
    try:
        # Rule 7: names equal after the cut are one key; the later value wins, in the first place.
        cut: dict[str, object] = {}
        for k, v in obj.items():
            if k not in RESERVED:
                cut[k[:255]] = v
        props = tuple((k, _value(v)) for k, v in cut.items() if v is not None)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes
        return None
    if n is None:
        return ("set", t, p, props)
    return ("event", t, p, n[:255], props)


def shape(parsed: Record | Rejection | None) -> tuple | None:
    if not isinstance(parsed, Record):
        return None
    if parsed.kind == "alias":
        return ("alias", parsed.t, parsed.p, parsed.p2)
    if parsed.kind == "set":
        return ("set", parsed.t, parsed.p, parsed.properties)
    return ("event", parsed.t, parsed.p, parsed.n, parsed.properties)


# --- Strategies: lines of every kind -------------------------------------------------

MISSING = object()
odd_strings = st.one_of(
    st.sampled_from(
        ["", " ", "\t", "\n", "0", "007", "-1", "1.5", "１２", "²", "\0", "a\0b", "😀", "\u2028"]
        + ["\\N", "\\303\\251", "null", "true", "1351187280", "253402300800", "Bob", "bob "]
    ),
    st.text(max_size=12),
    st.text(st.sampled_from("é😀a\0\\\t"), min_size=250, max_size=270),
)
odd_ints = st.one_of(
    st.integers(-3, 3),
    st.integers(-(2**63), 2**64 - 1),
    st.integers(2**64, 2**90),
    st.sampled_from([MAX_T, MAX_T + 1, -(2**63) - 1, 1351187280]),
)
odd_floats = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([-0.0, 0.0, 0.5, -0.5, 1e300, -1e-300, 1351187280.9, MAX_T + 0.5, MAX_T + 1.0]),
)
scalars = st.one_of(st.none(), st.booleans(), odd_ints, odd_floats, odd_strings)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
good_identities = st.sampled_from(["a", "b", "B", "b ", "é", "1", "2", "07", "7", "Bob"])


def weighted(*choices: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """One of the strategies, picked with the given weights."""
    return st.sampled_from([s for weight, s in choices for _ in range(weight)]).flatmap(lambda s: s)


# Values of every JSON type that a reserved key must refuse or read with care.
odd_specials = st.sampled_from(
    [True, False, 0, -1, 2**63, 2**64 - 1, 2**64, 10**30, -0.0, 0.9, -0.5, 1e300, MAX_T + 1]
    + ["", " ", "\0", "\0" * 3, "12a", " 12", "１２", "²", "+5", "-5", "1e3", "0" * 300]
    + [[], {}, [1], ["a"], {"a": 1}, {"_p": "a"}]
)


def field(good: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly a usable value, else missing, null or a value of any type."""
    return weighted(
        (20, good), (1, st.just(MISSING)), (1, st.none()), (2, values), (2, odd_specials)
    )


property_names = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["_k", "_d", "_p3", "", " ", "x" * 300, "\0", "😀", "a\tb", "\\N", "plan"]),
)
objects = st.builds(
    lambda p, p2, t, n, props, reserved_last: _object(p, p2, t, n, props, reserved_last),
    p=field(good_identities),
    p2=weighted((6, st.just(MISSING)), (1, st.none()), (2, good_identities), (1, values)),
    t=field(st.one_of(st.integers(0, 2_000_000_000), st.from_regex(r"\A[0-9]{1,14}\Z"))),
    n=field(st.sampled_from(["visited", "signed up", "é", " ", "x" * 260])),
    props=st.dictionaries(property_names, values, max_size=4),
    reserved_last=st.booleans(),
)


def _object(p, p2, t, n, props, reserved_last) -> dict[str, Any]:
    reserved = {k: v for k, v in (("_p", p), ("_p2", p2), ("_t", t), ("_n", n)) if v is not MISSING}
    props = {k: v for k, v in props.items() if k not in reserved}
    return {**props, **reserved} if reserved_last else {**reserved, **props}


def _dumps(obj: dict[str, Any], style: int) -> bytes:
    if style == 0:
        return json.dumps(obj, ensure_ascii=True).encode()
    if style == 1:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    return b"  " + json.dumps(obj, ensure_ascii=False, indent=None).encode() + b" \r"


# (raw line, the object it was built from or None)
Line = tuple[bytes, dict[str, Any] | None]
object_lines: st.SearchStrategy[Line] = st.builds(
    lambda obj, style: (_dumps(obj, style), obj), objects, st.integers(0, 2)
)
truncated_lines: st.SearchStrategy[Line] = st.builds(
    lambda line, cut: (line[0][: int(len(line[0]) * cut)], None),
    object_lines,
    st.floats(0, 1),
)
random_bytes: st.SearchStrategy[Line] = st.builds(
    lambda b: (b.replace(b"\n", b""), None), st.binary(max_size=80)
)
FRAGMENTS = [
    *(b"\\303\\251", b"\\231", b"Frigidman\\231", b"\\", b"\\\\", b"\\\\303", b"\\200"),
    *(b"\\377", b"\\400", b"\\2", b"\\30", b"\\u0000", b"\\u00e9", b"\\ud83d\\ude00"),
    *(b"\\ud800", b"\\udc00x", b"\x80", b"\xff", b"\xc3", b"\xc3\xa9", b"\xf0\x9f\x98\x80"),
    *(b"\xf0\x9f", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\x00", b'"', b"\t", b"\r", b"\\n"),
    *(b"\\/", b"\\x41", b"\\U0001F600", b"\xe2\x80\xa8", b"\\342\\204\\242", b"\\303"),
]
fragment = st.lists(
    st.one_of(
        st.sampled_from(FRAGMENTS),
        st.binary(max_size=3).map(lambda b: b.replace(b"\n", b"")),
        st.text(max_size=3).map(lambda s: s.replace("\n", "").encode()),
    ),
    max_size=5,
).map(b"".join)
escaped_lines: st.SearchStrategy[Line] = st.builds(
    lambda n, p, k, v, t: (
        b'{"_n":"' + n + b'","_p":"' + p + b'","_t":' + t + b',"' + k + b'":"' + v + b'"}',
        None,
    ),
    fragment,
    fragment,
    fragment,
    fragment,
    st.sampled_from([b"1351187280", b'"1351187280"', b"1.5", b"-0.0", b"1e400", b"NaN"]),
)
DEPTHS = [1, 100, 253, 254, 255, 300, 1022, 1023, 1024, 3000]


def _deep(depth: int, brackets: bool, key: str) -> bytes:
    value = b"[" * depth + b"]" * depth if brackets else b'{"a":' * depth + b"1" + b"}" * depth
    base = {"_p": "deep", "_t": 5, "_n": "nested"}
    base.pop(key, None)
    return orjson.dumps(base)[:-1] + b',"' + key.encode() + b'":' + value + b"}"


deep_lines: st.SearchStrategy[Line] = st.builds(
    lambda d, b, k: (_deep(d, b, k), None),
    st.sampled_from(DEPTHS),
    st.booleans(),
    st.sampled_from(["prop", "_p", "_p2", "_t", "_n", "_k"]),
)
SPECIAL: list[Line] = [
    (raw, None)
    for raw in (
        b"",
        b" ",
        b"\t \r",
        b"\r",
        b"\x00",
        b"[]",
        b'"text"',
        b"null",
        b"123",
        b"{}",
        b'{"_p":"a","_t":NaN}',
        b'{"_p":"a","_t":Infinity,"_n":"e"}',
        b'{"_p":"a","_t":1,"big":1e400}',
        b'{"_p":"a","_t":1,"_p":""}',
        b'{"_p":"","_t":1,"_p":"z"}',
        b'\xef\xbb\xbf{"_p":"a","_t":1}',
        b'{"_p":"a","_t":1,"_n":"e"}garbage',
        b'{"_p":"a","_t":1,"_n":"e"}{"_p":"b","_t":1}',
        b'{"_p":"a","_t":1,"_n":"e","x":"\\u0000"}',
        b'{"_p":"Caf\\303\\251","_t":"0001351187280","_n":"Frigidman\\231"}',
        b'{"_p":"a","_t":1,"_n":"e","v":"lone \\ backslash"}',
        b'{"_p":"a","_t":1,"_n":"e","v":"\\\\201"}',
        b'{"_p":"1","_p2":"a","_t":1}',
        b'{"_p":"a","_p2":"a","_t":1}',
        b'{"_p":12,"_p2":"34","_t":1}',
    )
]
special_lines: st.SearchStrategy[Line] = st.sampled_from(SPECIAL)
any_line = weighted(
    (8, object_lines),
    (2, truncated_lines),
    (1, random_bytes),
    (2, escaped_lines),
    (1, deep_lines),
    (2, special_lines),
)
revision_files = st.dictionaries(
    st.integers(1, 3000), st.lists(any_line, max_size=12), min_size=1, max_size=3
)


# --- The whole import against the model and the oracle --------------------------------


def check_import(
    backend: str, folder: Path, files: dict[int, list[Line]], batch_size: int, final_newline: bool
) -> None:
    for lines in files.values():
        for raw, obj in lines:
            if obj is not None:  # the oracle agrees with the parser on well-formed JSON
                assert shape(parse_line(raw)) == oracle(orjson.loads(raw)), raw
    write_files(folder, {n: [raw for raw, _ in lines] for n, lines in files.items()}, final_newline)
    revisions = read_export(folder)
    assert set(revisions) == set(files)

    with fresh_database(backend, folder, batch_size) as (engine, settings):
        todo, counts = import_folder(engine, settings, folder)
        assert todo == sorted(files)
        wanted = expected(revisions)
        assert_same(dump(engine), wanted)

        with engine.connect() as conn:
            rejected = {
                (r[0], r[1]): (r[2], r[3])
                for r in conn.execute(
                    text("SELECT revision, line, reason, text FROM rejected_lines")
                )
            }
            event_ids = set(conn.execute(text("SELECT id FROM events")).scalars())
            progress = {
                r[0]: r[1:]
                for r in conn.execute(
                    text(
                        "SELECT number, status, lines_done, events, properties, rejected "
                        "FROM revisions"
                    )
                )
            }
            # Rows point at canonical people, and at the person of the identity the line named.
            for table in ("events", "properties"):
                misplaced = conn.execute(
                    text(
                        f"SELECT COUNT(*) FROM {table} x JOIN users u ON u.id = x.user_id "
                        "JOIN users i ON i.id = x.identity_id "
                        "WHERE u.canonical_id IS NOT NULL OR COALESCE(i.canonical_id, i.id) "
                        "<> x.user_id"
                    )
                ).scalar_one()
                assert misplaced == 0, table

        # Line by line: blank and skipped, rejected with its reason and text, or imported.
        per_revision: Counter = Counter()
        for number, lines in revisions.items():
            for line_no, raw in enumerate(lines, start=1):
                parsed = parse_line(raw)
                here = (number, line_no)
                is_event = number * ID_BASE + line_no in event_ids
                if parsed is None:
                    assert decode_line(raw).strip() == ""
                    assert here not in rejected and not is_event
                elif isinstance(parsed, Rejection):
                    reason, stored = rejected[here]
                    assert reason == parsed.reason and reason.strip()
                    assert stored == parsed.text[:REJECTED_TEXT]
                    assert not is_event
                    per_revision[number, "rejected"] += 1
                else:
                    assert here not in rejected
                    assert is_event == (parsed.kind == "event")
                    if parsed.kind == "event":
                        per_revision[number, "events"] += 1
                    if parsed.kind != "alias":
                        per_revision[number, "properties"] += len(parsed.properties)
            assert progress[number] == (
                "done",
                len(lines),
                per_revision[number, "events"],
                per_revision[number, "properties"],
                per_revision[number, "rejected"],
            )
        assert len(rejected) == len(wanted.rejected)
        for raw_line, obj in (x for lines in files.values() for x in lines):
            if obj is not None:
                assert parse_line(raw_line) is not None  # a JSON object is never "blank"

        # The summary counts add up.
        events = sum(wanted.events.values())
        properties = sum(len(e[3]) * c for e, c in wanted.events.items()) + sum(
            wanted.sets.values()
        )
        total_lines = sum(len(lines) for lines in revisions.values())
        assert (counts.lines, counts.events, counts.properties, counts.rejected) == (
            total_lines,
            events,
            properties,
            len(wanted.rejected),
        )
        assert counts.bytes == sum(
            (folder / "revisions" / f"{n}.json").stat().st_size for n in files
        )
        s = summary(engine)
        assert (s.revisions, s.lines, s.events, s.properties, s.aliases, s.rejected) == (
            len(files),
            total_lines,
            events,
            properties,
            len(wanted.aliases),
            len(wanted.rejected),
        )


ODD_VALUES: list[Any] = [
    *(None, True, False, 0, -1, 7, 2**63, 2**64 - 1, 2**64, 10**30, -0.0, 0.0, 0.9, -0.5),
    *(-1e-300, 1e300, 1351187280.5, MAX_T, MAX_T + 1, MAX_T + 0.5, MAX_T + 1.0),
    *("", " ", "\t", "\0", "a\0", "12a", " 12", "12 ", "１２", "²", "+5", "-5", "1e3", "0" * 300),
    *("1" * 13, "00" + str(MAX_T), str(MAX_T + 1), "x" * 300, "😀" * 300, "\u2028", "null"),
    *([], {}, [1], ["a"], {"a": 1}, {"_p": "a"}, [None]),
]
GOOD = {"_p": "who", "_t": 1351187280, "_n": "did"}
# Every odd value under every reserved key, after or before the others, and as a property.
ODD_LINES: list[Line] = [
    (_dumps(obj, style), obj)
    for key in ("_p", "_p2", "_t", "_n", "_k", "prop")
    for i, value in enumerate(ODD_VALUES)
    for obj, style in (
        ({**GOOD, key: value}, i % 3),
        ({key: value, **{k: v for k, v in GOOD.items() if k != key}}, (i + 1) % 3),
    )
]

EVERY_KIND: dict[int, list[Line]] = {
    140: [
        *SPECIAL,
        *((_deep(d, b, k), None) for d in DEPTHS for b in (True, False) for k in ("prop", "_p")),
        (b"\\303\\251\\231\\", None),
        (b'{"_n":"Caf\\303\\251","_p":"\\231","_t":1,"\\\\N":"\x80\xff\\377"}', None),
        (orjson.dumps({"_p": "x" * 300, "_t": 1.9, "_n": "😀" * 300, "v": "é" * 300}), None),
    ],
    141: [(b'{"_p":"b","_p2":"\xc3\xa9","_t":7}', None), (b"\x00" * 10, None)],
    142: ODD_LINES,
}


@hsettings(FUZZ, max_examples=40)
@given(files=revision_files, batch_size=st.integers(1, 7), final_newline=st.booleans())
@example(files=EVERY_KIND, batch_size=3, final_newline=True)
def test_bad_input_is_rejected_or_imported_on_sqlite(
    tmp_path_factory: pytest.TempPathFactory,
    files: dict[int, list[Line]],
    batch_size: int,
    final_newline: bool,
) -> None:
    check_import("sqlite", tmp_path_factory.mktemp("fuzz"), files, batch_size, final_newline)


@hsettings(FUZZ, max_examples=8)
@given(files=revision_files, batch_size=st.integers(1, 7), final_newline=st.booleans())
@example(files=EVERY_KIND, batch_size=3, final_newline=False)
def test_bad_input_is_rejected_or_imported_on_mariadb(
    mariadb: str,
    tmp_path_factory: pytest.TempPathFactory,
    files: dict[int, list[Line]],
    batch_size: int,
    final_newline: bool,
) -> None:
    check_import(mariadb, tmp_path_factory.mktemp("fuzz"), files, batch_size, final_newline)


@hsettings(FUZZ, max_examples=400)
@given(
    line=st.one_of(
        object_lines,
        st.builds(
            lambda o: (_dumps(o, 1), o),
            st.builds(
                _object,
                odd_specials,
                odd_specials,
                odd_specials,
                odd_specials,
                st.dictionaries(property_names, odd_specials, max_size=2),
                st.booleans(),
            ),
        ),
    )
)
def test_lines_built_from_objects_follow_the_contract(line: Line) -> None:
    """Without a database, many more objects: the parser agrees with the oracle."""
    raw, obj = line
    assert obj is not None
    assert shape(parse_line(raw)) == oracle(orjson.loads(raw))


@hsettings(FUZZ, max_examples=600)
@given(line=st.one_of(random_bytes, escaped_lines, truncated_lines, object_lines))
def test_parsing_raw_bytes_equals_parsing_the_decoded_line(line: Line) -> None:
    """The parser's shortcut (orjson on the raw bytes) never skips rules 1-3.

    Parsing a line must give what parsing it after decode_line gives: same
    record, or same rejection with the same reason and text.
    """
    raw, _ = line
    assert parse_line(raw) == parse_line(decode_line(raw).encode())


# --- 10 MB lines ----------------------------------------------------------------------

TEN_MB = 10 * 1024 * 1024


def test_ten_megabyte_lines(backend: str, tmp_path: Path) -> None:
    # Escapes, NUL and 4-byte characters where the 255-character cut falls, then 10 MB of é.
    big = "😀é\t\\N\0" * 100 + "é" * (TEN_MB // 2)
    big_line = orjson.dumps({"_n": "big", "_p": "a", "_t": 2, "blob": big, "small": "x"})
    assert len(big_line) > TEN_MB
    # Not valid JSON (it never ends), with octal escapes past the 65,536-character cut.
    broken_text = '{"_n":"broken","_p":"a","_t":3,"blob":"' + "Café ™ " * 10_000 + "x" * TEN_MB
    broken_line = broken_text.replace("é", "\\303\\251").replace("™", "\\342\\204\\242").encode()
    assert len(broken_line) > TEN_MB and len(broken_text) > TEN_MB
    long_key = "k" * (2 * 1024 * 1024)
    lines = [
        orjson.dumps({"_n": "first", "_p": "a", "_t": 1, "v": 1}),
        big_line,
        orjson.dumps({"_p": "a", "_t": 2, "plan": "gold"}),
        broken_line,
        orjson.dumps({"_p": "b", "_t": 4, long_key: [1, 2]}),
        b"",
        orjson.dumps({"_n": "last", "_p": "b", "_t": 5}),
    ]
    folder = tmp_path / "export"
    write_files(folder, {7: lines}, final_newline=True)
    with fresh_database(backend, tmp_path, batch_size=2) as (engine, settings):
        _todo, counts = import_folder(engine, settings, folder)
        found = dump(engine)
        with engine.connect() as conn:
            rejected = conn.execute(
                text("SELECT revision, line, reason, text FROM rejected_lines")
            ).all()
    assert_same(found, expected({7: lines}))
    assert (counts.lines, counts.events, counts.properties, counts.rejected) == (7, 3, 5, 1)
    assert counts.bytes == sum(len(x) + 1 for x in lines)
    assert sorted(found.events) == [
        ("1970-01-01 00:00:01", "first", "a", (("v", "1"),)),
        ("1970-01-01 00:00:02", "big", "a", (("blob", big[:255]), ("small", "x"))),
        ("1970-01-01 00:00:05", "last", "b", ()),
    ]
    assert found.sets == Counter(
        {
            ("1970-01-01 00:00:02", "a", "plan", "gold"): 1,
            ("1970-01-01 00:00:04", "b", "k" * 255, "[1,2]"): 1,
        }
    )
    [(revision, line_no, reason, stored)] = rejected
    assert (revision, line_no) == (7, 4)
    assert reason.startswith("not valid JSON") and len(reason) < 500
    assert len(stored) == REJECTED_TEXT and stored == broken_text[:REJECTED_TEXT]


# --- Awkward names and values round-trip exactly through the bulk load ----------------

AWKWARD = ["\t", "\n", "\r", "\\", "\\N", "N", '"', "'", "\0", "😀", "\U0010ffff", "\u2028"]
AWKWARD += [" ", "é", "𝄞", "\x1a", "\x7f", "\ufeff", "%", "_", ",", "\\t", "\\0", "\\\\"]
awkward_text = st.one_of(
    st.lists(
        st.one_of(st.sampled_from(AWKWARD), st.characters(exclude_categories=["Cs"])),
        min_size=1,
        max_size=30,
    ).map("".join),
    # Long enough to be cut, with the cut falling among multi-byte characters.
    st.text(st.sampled_from("😀é𝄞\t\\\0 a"), min_size=250, max_size=300),
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=8).map(
        lambda s: s + "  "
    ),
)
awkward_key = awkward_text.filter(lambda s: s not in RESERVED)


@hsettings(FUZZ, max_examples=20)
@given(
    events=st.lists(
        st.tuples(awkward_text, awkward_text, awkward_key, awkward_text), min_size=1, max_size=4
    ),
    set_line=st.tuples(awkward_text, awkward_key, awkward_text),
    alias=st.tuples(awkward_text, awkward_text),
    bad=awkward_text,
)
def test_awkward_names_and_values_round_trip(
    backend: str,
    tmp_path_factory: pytest.TempPathFactory,
    events: list[tuple[str, str, str, str]],
    set_line: tuple[str, str, str],
    alias: tuple[str, str],
    bad: str,
) -> None:
    lines = [
        orjson.dumps({"_n": n, "_p": p, "_t": 1_000 + i, key: value})
        for i, (n, p, key, value) in enumerate(events)
    ]
    lines.append(orjson.dumps({"_p": set_line[0], "_t": 2_000, set_line[1]: set_line[2]}))
    lines.append(orjson.dumps({"_p": alias[0], "_p2": alias[1], "_t": 3_000}))
    bad_line = orjson.dumps({"_p": bad, "_t": "at " + bad, "_n": bad})
    lines.append(bad_line)
    revision = 9
    folder = tmp_path_factory.mktemp("awkward")
    write_files(folder / "export", {revision: lines}, final_newline=True)

    with fresh_database(backend, folder, batch_size=3) as (engine, settings):
        import_folder(engine, settings, folder / "export")
        with engine.connect() as conn:
            stored_events = {
                row[0]: (row[1], row[2])
                for row in conn.execute(
                    text(
                        quoted(
                            engine,
                            "SELECT e.id, k.string, i.name FROM events e "
                            "JOIN KEYS k ON k.id = e.n JOIN users i ON i.id = e.identity_id",
                        )
                    )
                )
            }
            stored_properties = Counter(
                tuple(row)
                for row in conn.execute(
                    text(
                        quoted(
                            engine,
                            "SELECT p.event_id, i.name, k.string, p.value FROM properties p "
                            "JOIN KEYS k ON k.id = p.KEY JOIN users i ON i.id = p.identity_id",
                        )
                    )
                )
            )
            stored_aliases = conn.execute(text("SELECT name1, name2 FROM aliases")).all()
            stored_rejected = conn.execute(
                text("SELECT line, reason, text FROM rejected_lines")
            ).all()
            keys = set(conn.execute(text(quoted(engine, "SELECT string FROM KEYS"))).scalars())
        found = dump(engine)

    base = revision * ID_BASE
    assert stored_events == {
        base + i: (n[:255], p[:255]) for i, (n, p, _, _) in enumerate(events, start=1)
    }
    assert stored_properties == Counter(
        [(base + i, p[:255], k[:255], v[:255]) for i, (_, p, k, v) in enumerate(events, start=1)]
        + [(None, set_line[0][:255], set_line[1][:255], set_line[2][:255])]
    )
    assert keys == {n[:255] for n, _, _, _ in events} | {k[:255] for _, _, k, _ in events} | {
        set_line[1][:255]
    }
    a, b = alias[0][:255], alias[1][:255]
    numeric = [x.isascii() and x.isdigit() for x in (a, b)]
    if a == b or all(numeric):
        assert stored_aliases == []
    else:
        first = b if numeric[1] or (not numeric[0] and b < a) else a
        assert [tuple(row) for row in stored_aliases] == [(first, b if first == a else a)]
    [(line_no, reason, stored_text)] = stored_rejected
    assert line_no == len(lines)
    assert stored_text == bad_line.decode()
    assert reason == parse_line(bad_line).reason  # type: ignore[union-attr]
    assert reason.startswith("_t is not a time: ") and "at " in reason
    assert_same(found, expected({revision: lines}))


def test_octal_escapes_and_bad_bytes_round_trip(backend: str, tmp_path: Path) -> None:
    """Decoded escapes and replaced bytes are stored as the contract reads them."""
    lines = [
        b'{"_n":"Caf\\303\\251","_p":"Frigidman\\231","_t":1,"v":"\\\\201","w":"\x80\\u0000"}',
        b'{"_n":"\\360\\237\\230\\200","_p":"\xf0\x9f\x98\x80","_t":"2","v":"\\201\\215"}',
    ]
    folder = tmp_path / "export"
    write_files(folder, {1: lines}, final_newline=False)
    with fresh_database(backend, tmp_path) as (engine, settings):
        import_folder(engine, settings, folder)
        found = dump(engine)
    assert sorted(found.events) == [
        ("1970-01-01 00:00:01", "Café", "Frigidman™", (("v", "\\201"), ("w", "\ufffd\0"))),
        ("1970-01-01 00:00:02", "😀", "😀", (("v", "\ufffd\ufffd"),)),
    ]
    assert decode_line(lines[1]).count("😀") == 2
