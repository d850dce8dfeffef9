"""Tests for kmdb.transform.parse: the contract's rules for one line (sections "A line" 1-7)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmdb.transform.parse import (
    MAX_CHARS,
    MAX_T,
    RESERVED_KEYS,
    Record,
    Rejection,
    decode_line,
    is_numeric,
    parse_line,
)

# The contract's worked examples live beside the repository (../shared), where they may be
# sharpened between sessions; tests/contract keeps a copy, so that a clone anywhere runs them.
SHARED = Path(os.environ.get("KMDB_SHARED_DIR") or Path(__file__).resolve().parents[2] / "shared")
COPY = Path(__file__).resolve().parent / "contract" / "km-line-cases.jsonl"
CASES_FILE = SHARED / "km-line-cases.jsonl" if (SHARED / "km-line-cases.jsonl").exists() else COPY


def _load_cases() -> list[dict]:
    with CASES_FILE.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _raw(case: dict) -> bytes:
    if "line_hex" in case:
        return bytes.fromhex(case["line_hex"])
    return case["line"].encode("utf-8")


def line(obj: dict) -> bytes:
    return orjson.dumps(obj)


def record(obj: dict) -> Record:
    result = parse_line(line(obj))
    assert isinstance(result, Record), result
    return result


def rejected(raw: bytes) -> Rejection:
    result = parse_line(raw)
    assert isinstance(result, Rejection), result
    return result


def props(result: Record) -> dict[str, str]:
    return dict(result.properties)


BASE = {"_p": "x", "_t": 1351187280}


# --- The shared worked examples -----------------------------------------------------

CASES = _load_cases()


def test_the_copy_of_the_cases_is_the_shared_file() -> None:
    shared = SHARED / "km-line-cases.jsonl"
    if not shared.exists():
        pytest.skip(f"no {shared} to compare with (set KMDB_SHARED_DIR)")
    assert COPY.read_bytes() == shared.read_bytes(), f"copy {shared} to {COPY}"


def test_the_shared_cases_file_is_not_empty() -> None:
    assert CASES
    assert all("expect" in c and ("line" in c or "line_hex" in c) for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["why"] for c in CASES])
def test_shared_case(case: dict) -> None:
    expect = case["expect"]
    result = parse_line(_raw(case))
    if expect.get("skip"):
        assert result is None
    elif expect.get("reject"):
        assert isinstance(result, Rejection)
        assert result.reason
        assert result.text == decode_line(_raw(case))
    else:
        assert isinstance(result, Record), result
        assert result.kind == expect["kind"]
        assert result.t == expect["t"]
        assert result.p == expect["p"]
        assert result.n == expect.get("n")
        assert result.p2 == expect.get("p2")
        assert result.properties == tuple(expect.get("properties", {}).items())


# --- Rule 1: blank lines -----------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b" ", b"\t", b"\r", b" \t \r", b"  \x0c "])
def test_blank_lines_are_skipped(raw: bytes) -> None:
    assert parse_line(raw) is None


def test_a_line_ending_in_carriage_return_is_parsed() -> None:
    assert parse_line(line({**BASE, "_n": "a"}) + b"\r") == Record("event", 1351187280, "x", n="a")


# --- Rules 2 and 3: decoding -------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (rb"Caf\303\251", "Café"),
        (rb"Frigidman\231", "Frigidman™"),
        (rb"C:\\Users\\201x", r"C:\\Users\\201x"),
        (rb"\\\303\251", "\\\\é"),
        (rb"\\\\201", r"\\\\201"),
        (rb"\303A", "ÃA"),
        (rb"\201", "\ufffd"),
        (rb"a\215b\217c\220d\235e", "a\ufffdb\ufffdc\ufffdd\ufffde"),
        (rb"\342\202", "â‚"),
        (rb"\342\202\254", "€"),
        (rb"\360\237\230\200", "😀"),
        (rb"\355\240\200", "í\xa0€"),  # an encoded surrogate is not UTF-8
        (rb"\303\251\231", "é™"),
        (rb"\101", r"\101"),
        (rb"\400", r"\400"),
        (rb"\30", r"\30"),
        (rb"\"\303\251", '\\"é'),
        (b"raw\xffbyte", "raw\ufffdbyte"),
        (b"\xc3\xa9 \xe2\x82", "é \ufffd"),
        (b"\xc3" + rb"\251", "\ufffd©"),
    ],
)
def test_decode_line(raw: bytes, text: str) -> None:
    assert decode_line(raw) == text


def test_octal_escapes_decode_inside_json() -> None:
    result = parse_line(rb'{"_p":"Jos\303\251","_t":1,"_n":"\342\204\242"}')
    assert result == Record("event", 1, "José", n="™")


def test_octal_outside_200_to_377_stays_and_json_rejects_it() -> None:
    result = rejected(rb'{"_p":"x","_t":1,"v":"\101"}')
    assert result.reason.startswith("not valid JSON: ")
    assert result.text == r'{"_p":"x","_t":1,"v":"\101"}'


def test_rejection_text_is_the_decoded_line() -> None:
    assert rejected(b'{"_p":"\xff' + rb"\303\251").text == '{"_p":"\ufffdé'


def test_escaped_backslashes_before_octal_digits_stay_literal() -> None:
    result = parse_line(rb'{"_p":"x","_t":1,"v":"\\\\201"}')
    assert isinstance(result, Record)
    assert props(result) == {"v": "\\\\201"}


def test_json_escapes_are_kept() -> None:
    obj = {**BASE, "v": "a\u0000b\tc\nd\re"}
    assert line(obj).count(b"\\u0000") == 1
    assert props(record(obj)) == {"v": "a\u0000b\tc\nd\re"}


# --- Rule 4: JSON and objects ------------------------------------------------------


@pytest.mark.parametrize(
    "raw", [b"[1,2]", b'"text"', b"12", b"null", b"true", b'"{\\"_p\\":\\"x\\"}"']
)
def test_json_that_is_not_an_object_is_rejected(raw: bytes) -> None:
    assert rejected(raw).reason == "the line is not a JSON object"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"_p":"x","_t":1',
        b'{"_p":"x","_t":1}{}',
        b'{"_p":"x","_t":1,"v":NaN}',
        b'{"_p":"x","_t":1,"v":Infinity}',
        b'{"_p":"x","_t":1,"v":1e400}',
        b"{'_p':'x','_t':1}",
        b'{"_p":"x","_t":1,"v":"\\ud800"}',
        b'\xef\xbb\xbf{"_p":"x","_t":1}',
        b'{"_p":"x","_t":1,"v":"a\x01b"}',
        b"garbage",
    ],
)
def test_invalid_json_is_rejected(raw: bytes) -> None:
    result = rejected(raw)
    assert result.reason.startswith("not valid JSON: ")
    assert len(result.reason) > len("not valid JSON: ")


# --- Rule 4: identities ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "stored"),
    [("john", "john"), (12345, "12345"), (-5, "-5"), (0, "0"), (" ", " "), ("0012", "0012")],
)
def test_identity_values(value: object, stored: str) -> None:
    assert record({"_p": value, "_t": 1}).p == stored


def test_the_largest_integers_orjson_reads_are_identities() -> None:
    assert record({"_p": 2**64 - 1, "_t": 1}).p == "18446744073709551615"
    assert record({"_p": -(2**63), "_t": 1}).p == "-9223372036854775808"


@pytest.mark.parametrize("value", ["", None, True, False, 1.5, 1.0, [], ["x"], {"a": 1}])
def test_unusable_identities_are_rejected(value: object) -> None:
    assert rejected(line({"_p": value, "_t": 1})).reason.startswith("_p is not an identity: ")


def test_an_integer_too_big_for_64_bits_is_a_float_and_no_identity() -> None:
    raw = b'{"_p":123456789012345678901234567890,"_t":1}'
    assert rejected(raw).reason == "_p is not an identity: 1.2345678901234568e+29"


def test_a_missing_identity_is_rejected() -> None:
    assert rejected(b'{"_t":1}').reason == "_p is missing"


def test_identities_are_cut_to_255_code_points() -> None:
    assert record({"_p": "é" * 300, "_t": 1}).p == "é" * MAX_CHARS
    assert record({"_p": "😀" * 256, "_t": 1}).p == "😀" * 255


def test_integer_identities_are_cut_after_conversion() -> None:
    # No integer orjson reads has 255 digits, so the cut never bites; the text is whole.
    assert record({"_p": -(2**63), "_t": 1}).p == str(-(2**63))


# --- Rule 4: times -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "t"),
    [
        (0, 0),
        (MAX_T, MAX_T),
        ("1351187280", 1351187280),
        ("0001351187280", 1351187280),
        ("0", 0),
        (str(MAX_T), MAX_T),
        ("0" * 5000 + "7", 7),
        (1351187280.9, 1351187280),
        (0.5, 0),
        (-0.0, 0),
        (MAX_T + 0.5, MAX_T),
        (1e9, 1000000000),
    ],
)
def test_usable_times(value: object, t: int) -> None:
    assert record({"_p": "x", "_t": value}).t == t


@pytest.mark.parametrize(
    "value",
    [
        -1,
        -5,
        MAX_T + 1,
        float(MAX_T + 1),
        -0.5,
        1e300,
        -1e300,
        2**64 - 1,
        "yesterday",
        "",
        "+5",
        " 5",
        "5 ",
        "-5",
        "1.5",
        "1e9",
        "١٢",
        str(MAX_T + 1),
        "9" * 5000,
        None,
        True,
        False,
        [1],
        {"t": 1},
    ],
)
def test_unusable_times_are_rejected(value: object) -> None:
    assert rejected(line({"_p": "x", "_t": value})).reason.startswith("_t is not a time: ")


def test_a_missing_time_is_rejected() -> None:
    assert rejected(b'{"_p":"x"}').reason == "_t is missing"


def test_the_reason_quotes_a_string_time() -> None:
    assert rejected(b'{"_p":"x","_t":"yesterday"}').reason == "_t is not a time: 'yesterday'"


def test_a_long_value_is_shortened_in_the_reason() -> None:
    reason = rejected(line({"_p": "x", "_t": "y" * 1000})).reason
    assert reason.endswith("...")
    assert len(reason) < 100


# --- Validation order ----------------------------------------------------------------


def test_identity_is_checked_before_time() -> None:
    assert rejected(b'{"_t":"bad","_n":""}').reason == "_p is missing"


def test_time_is_checked_before_alias_and_name() -> None:
    assert rejected(b'{"_p":"x","_t":"bad","_p2":"","_n":""}').reason.startswith("_t ")


def test_alias_is_checked_before_name() -> None:
    assert rejected(b'{"_p":"x","_t":1,"_p2":"","_n":""}').reason.startswith("_p2 ")


# --- Rule 5: kinds -------------------------------------------------------------------


def test_an_alias_wins_over_an_event_name() -> None:
    result = record({**BASE, "_p2": "y", "_n": "viewed"})
    assert (result.kind, result.p2, result.n) == ("alias", "y", None)


def test_an_alias_has_no_properties() -> None:
    result = record({**BASE, "_p2": "john@example.com", "plan": "gold", "_c": "x"})
    assert result == Record("alias", 1351187280, "x", p2="john@example.com")


@pytest.mark.parametrize(("value", "stored"), [(42, "42"), (-7, "-7"), ("y", "y")])
def test_alias_targets(value: object, stored: str) -> None:
    assert record({**BASE, "_p2": value}).p2 == stored


@pytest.mark.parametrize("value", ["", True, 1.5, [], {"a": 1}])
def test_unusable_alias_targets_are_rejected(value: object) -> None:
    assert rejected(line({**BASE, "_p2": value})).reason.startswith("_p2 is not an identity: ")


def test_a_null_alias_target_is_not_an_alias() -> None:
    assert record({**BASE, "_p2": None, "_n": "a"}).kind == "event"
    assert record({**BASE, "_p2": None}).kind == "set"


def test_alias_targets_are_cut_to_255() -> None:
    assert record({**BASE, "_p2": "z" * 300}).p2 == "z" * MAX_CHARS


@pytest.mark.parametrize("value", ["", 5, 0, True, 1.5, ["viewed"], {"n": "viewed"}])
def test_unusable_event_names_are_rejected(value: object) -> None:
    assert rejected(line({**BASE, "_n": value})).reason.startswith("_n is not an event name: ")


def test_event_names_are_cut_to_255() -> None:
    assert record({**BASE, "_n": "ü" * 300}).n == "ü" * MAX_CHARS


def test_a_property_set_has_no_name_or_target() -> None:
    result = record({**BASE, "a": "b"})
    assert (result.kind, result.n, result.p2) == ("set", None, None)


def test_a_line_with_only_identity_and_time_is_an_empty_property_set() -> None:
    assert record(BASE) == Record("set", 1351187280, "x")


# --- Rule 6: properties --------------------------------------------------------------


def test_reserved_keys_are_not_properties() -> None:
    assert sorted(RESERVED_KEYS) == ["_d", "_k", "_n", "_p", "_p2", "_t"]
    obj = {**BASE, "_n": "a", "_k": "key", "_d": 1, "_c": "m", "_x": 2, "_P": "up", "": "e"}
    assert props(record(obj)) == {"_c": "m", "_x": "2", "_P": "up", "": "e"}


@pytest.mark.parametrize("key", sorted(RESERVED_KEYS - {"_p", "_t", "_p2", "_n"}))
def test_each_reserved_key_is_dropped_from_a_property_set(key: str) -> None:
    assert record({**BASE, key: "v", "keep": "k"}).properties == (("keep", "k"),)


def test_properties_keep_the_line_key_order() -> None:
    raw = b'{"z":"1","_p":"x","a":"2","_t":1,"m":"3"}'
    result = parse_line(raw)
    assert isinstance(result, Record)
    assert result.properties == (("z", "1"), ("a", "2"), ("m", "3"))


def test_a_repeated_key_keeps_its_last_value() -> None:
    result = parse_line(b'{"_p":"x","_t":1,"a":"1","a":"2"}')
    assert isinstance(result, Record)
    assert result.properties == (("a", "2"),)


@pytest.mark.parametrize(
    ("raw_value", "stored"),
    [
        (b'"text"', "text"),
        (b'""', ""),
        (b"true", "true"),
        (b"false", "false"),
        (b"0", "0"),
        (b"-1.5", "-1.5"),
        (b"39.99", "39.99"),
        (b"1E2", "100.0"),
        (b"1.0", "1.0"),
        (b"-0.0", "-0.0"),
        (b"123456789012345678901234567890", "1.2345678901234568e+29"),
        (b"18446744073709551615", "18446744073709551615"),
        (b"[1, 2]", "[1,2]"),
        (b"[]", "[]"),
        (b'{ "a" : 1 , "b" : [ null ] }', '{"a":1,"b":[null]}'),
        (b'"caf\\u00e9"', "café"),
    ],
)
def test_property_values(raw_value: bytes, stored: str) -> None:
    result = parse_line(b'{"_p":"x","_t":1,"v":' + raw_value + b"}")
    assert isinstance(result, Record)
    assert props(result) == {"v": stored}


def test_null_properties_are_skipped() -> None:
    assert record({**BASE, "_n": "a", "gone": None, "kept": "y"}).properties == (("kept", "y"),)


def test_a_value_beyond_a_double_is_rejected() -> None:
    assert rejected(b'{"_p":"x","_t":1,"v":1e400}').reason.startswith("not valid JSON: ")


def test_a_value_too_deeply_nested_to_write_back_is_rejected() -> None:
    raw = b'{"_p":"x","_t":1,"v":' + b"[" * 300 + b"]" * 300 + b"}"
    assert "nested too deeply" in rejected(raw).reason


def test_a_too_deeply_nested_identity_is_shown_without_failing() -> None:
    raw = b'{"_p":' + b"[" * 300 + b"]" * 300 + b',"_t":1}'
    assert rejected(raw).reason.startswith("_p is not an identity: ")


# --- Rule 7: cutting to 255 characters -------------------------------------------------


def test_property_names_and_values_are_cut_to_255_code_points() -> None:
    result = record({**BASE, "n" * 256: "é" * 256, "k": "€" * 255})
    assert result.properties == (("n" * 255, "é" * 255), ("k", "€" * 255))


def test_json_text_of_a_value_is_cut_to_255() -> None:
    value = list(range(200))
    assert props(record({**BASE, "v": value}))["v"] == orjson.dumps(value).decode()[:255]


def test_names_equal_after_the_cut_are_one_property_and_the_later_wins() -> None:
    result = record({**BASE, "a" * 255 + "1": "x", "k": "1", "a" * 255 + "2": "y"})
    assert result.properties == (("a" * 255, "y"), ("k", "1"))


def test_a_later_null_under_an_equal_cut_name_skips_the_property() -> None:
    result = record({**BASE, "a" * 256: "x", "a" * 257: None})
    assert result.properties == ()


def test_a_name_of_255_characters_and_a_longer_one_cut_to_it_are_one_property() -> None:
    result = record({**BASE, "a" * 300: "x", "a" * 255: "y"})
    assert result.properties == (("a" * 255, "y"),)


# --- is_numeric ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "numeric"),
    [
        ("007", True),
        ("12345", True),
        ("0", True),
        ("", False),
        ("12\n", False),
        (" 12", False),
        ("١٢", False),
        ("²", False),
        ("-1", False),
        ("+1", False),
        ("1.0", False),
        ("1e3", False),
        ("john", False),
    ],
)
def test_is_numeric(identity: str, numeric: bool) -> None:
    assert is_numeric(identity) is numeric


def test_a_negative_integer_identity_is_not_numeric() -> None:
    result = record({"_p": -5, "_t": 1})
    assert result.p == "-5"
    assert not is_numeric(result.p)


# --- Properties that hold for any input -----------------------------------------------

FAST = settings(max_examples=300, deadline=None)


@FAST
@given(st.binary(max_size=200))
def test_parse_line_never_raises_on_bytes(raw: bytes) -> None:
    result = parse_line(raw)
    assert result is None or isinstance(result, Record | Rejection)
    if isinstance(result, Rejection):
        assert result.reason and result.text == decode_line(raw)


_OCTAL_NOISE = st.lists(
    st.sampled_from([b"\\", b"\\\\", b"\\303", b"\\251", b"\\231", b"\\201", b"\\377", b"\xff"])
    | st.binary(max_size=4),
    max_size=20,
).map(b"".join)


@FAST
@given(_OCTAL_NOISE)
def test_decode_line_handles_escape_soup(raw: bytes) -> None:
    text = decode_line(raw)
    # Whatever came in, what goes out has no surrogates, so orjson and MySQL can take it.
    assert not any("\ud800" <= c <= "\udfff" for c in text)
    assert text.encode("utf-8").decode("utf-8") == text
    assert isinstance(parse_line(raw), Record | Rejection | type(None))


@FAST
@given(st.text())
def test_parse_line_never_raises_on_text(text: str) -> None:
    raw = text.encode("utf-8", "surrogatepass")
    result = parse_line(raw)
    assert result is None or isinstance(result, Record | Rejection)


_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)
_IDENTITY = _TEXT.filter(bool) | st.integers(-(2**63), 2**64 - 1)
_TIME = st.integers(0, MAX_T) | st.integers(0, MAX_T).map(str)


@FAST
@given(
    p=_IDENTITY,
    t=_TIME,
    n=st.none() | _TEXT.filter(bool),
    properties=st.dictionaries(_TEXT, _TEXT, max_size=8),
)
def test_round_trip(p: object, t: object, n: str | None, properties: dict[str, str]) -> None:
    obj = {k: v for k, v in properties.items() if k not in RESERVED_KEYS}
    obj.update({"_p": p, "_t": t})
    if n is not None:
        obj["_n"] = n
    result = parse_line(orjson.dumps(obj))
    assert isinstance(result, Record)
    assert result.kind == ("set" if n is None else "event")
    assert result.p == str(p)[:MAX_CHARS]
    assert result.t == int(t)
    assert result.n == (None if n is None else n[:MAX_CHARS])
    expected = tuple(
        (k[:MAX_CHARS], v[:MAX_CHARS]) for k, v in properties.items() if k not in RESERVED_KEYS
    )
    assert result.properties == expected


@FAST
@given(_TEXT.filter(lambda s: "\\" not in s))
def test_decode_line_is_the_identity_without_backslashes(text: str) -> None:
    assert decode_line(text.encode("utf-8")) == text


@FAST
@given(st.binary(max_size=100).filter(lambda b: b"\\" not in b))
def test_decode_line_without_backslashes_is_plain_utf8_with_replacement(raw: bytes) -> None:
    assert decode_line(raw) == raw.decode("utf-8", "replace")
