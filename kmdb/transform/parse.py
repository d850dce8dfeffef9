"""Turn one line of a KISSmetrics revision file into a record (pure: no I/O, no database).

The rules are sections "A line" 1-7 of the import contract: octal escapes and
bad bytes are decoded first, then the JSON object is checked in a fixed order
(JSON, object, ``_p``, ``_t``, then ``_p2`` / ``_n``) so that a line with
several faults always gets the same reason.
"""

from __future__ import annotations

import codecs
import math
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

__all__ = [
    "MAX_CHARS",
    "MAX_T",
    "RESERVED_KEYS",
    "Record",
    "Rejection",
    "decode_line",
    "is_numeric",
    "parse_fields",
    "parse_line",
]

MAX_CHARS = 255
"""Identities, event names, property names and values keep this many characters."""

MAX_T = 253402300799
"""9999-12-31 23:59:59 UTC, the last second a MySQL DATETIME can hold."""

RESERVED_KEYS = frozenset({"_n", "_p", "_p2", "_t", "_k", "_d"})
"""Keys KM uses for itself; every other key of a line is a property."""

# A reason quotes at most this much of the offending value, so it stays one short sentence.
_SHOWN_CHARS = 40


class Record(NamedTuple):
    """One usable line: an event, a property set or an alias."""

    kind: str  # "event", "set" or "alias"
    t: int  # seconds since the epoch, 0 <= t <= MAX_T
    p: str
    n: str | None = None
    p2: str | None = None
    properties: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Rejection:
    """A line that cannot be imported, with why and what it said."""

    reason: str
    text: str


# --- Rules 2 and 3: bytes to text -------------------------------------------------

# An escaped backslash pair is matched as a unit so that the scan never starts an
# octal escape at its second backslash: `\\201` is a literal backslash, then "201".
# Written to begin with the backslash itself: a pattern that starts with a literal
# lets re skip to the next backslash at once (far faster than `\\\\|(...)+`).
_ESCAPES = re.compile(rb"\\(?:\\|[23][0-7][0-7](?:\\[23][0-7][0-7])*)")
_OCTAL = re.compile(rb"\\[23][0-7][0-7]")

# Windows-1252 for every byte; the five bytes it leaves undefined read as U+FFFD.
_CP1252 = tuple(bytes([b]).decode("cp1252", errors="replace") for b in range(256))


def _cp1252_fallback(exc: UnicodeError) -> tuple[str, int]:
    # One byte at a time: the UTF-8 decoder may flag a whole truncated sequence,
    # but each of its bytes is a Windows-1252 character of its own.
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return _CP1252[exc.object[exc.start]], exc.start + 1


_ERRORS = "kmdb-cp1252"
codecs.register_error(_ERRORS, _cp1252_fallback)


# The same few runs (é, ü, ™...) come back on line after line.
_RUNS: dict[bytes, bytes] = {b"\\\\": b"\\\\"}
_RUNS_KEPT = 10_000


def _decode_run(match: re.Match[bytes]) -> bytes:
    escapes = match.group()
    decoded = _RUNS.get(escapes)
    if decoded is None:
        run = bytes(int(escapes[i + 1 : i + 4], 8) for i in range(0, len(escapes), 4))
        decoded = run.decode("utf-8", _ERRORS).encode("utf-8")
        if len(_RUNS) < _RUNS_KEPT:
            _RUNS[escapes] = decoded
    return decoded


def decode_line(raw: bytes) -> str:
    """Decode KM's octal escapes (rule 2), then read the line as UTF-8 (rule 3).

    A run of escapes ``\\200``-``\\377`` is UTF-8; its bytes that are not valid
    UTF-8 read as Windows-1252 (U+FFFD where that has no character). Any other
    invalid UTF-8 in the line becomes U+FFFD.
    """
    if b"\\" in raw:
        raw = _ESCAPES.sub(_decode_run, raw)
    return raw.decode("utf-8", "replace")


# --- Rules 4-7: text to a record --------------------------------------------------


def is_numeric(identity: str) -> bool:
    """Whether an identity is all ASCII digits (and not empty)."""
    # str.isdigit alone accepts other scripts' digits and superscripts.
    return identity.isascii() and identity.isdigit()


def _show(value: Any) -> str:
    """A value as a reason quotes it: strings in quotes, anything else as JSON."""
    if isinstance(value, str):
        cut = value[:_SHOWN_CHARS]
        return repr(cut) + ("..." if len(value) > _SHOWN_CHARS else "")
    try:
        shown = orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return "a value nested too deeply to show"
    return shown[:_SHOWN_CHARS] + ("..." if len(shown) > _SHOWN_CHARS else "")


def _identity(value: Any) -> str | None:
    """An identity's text, or None when the value cannot be one."""
    if isinstance(value, str):
        return value[:MAX_CHARS] if value else None
    # bool is a subclass of int, but `true` is not a person.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)[:MAX_CHARS]
    return None


def _time(value: Any) -> int | None:
    """Seconds since the epoch, or None when the value is not a time in range."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        t = value
    elif isinstance(value, float):
        # Compare before flooring: math.floor would raise on inf and build a
        # huge int for 1e300. `v < 0` lets -0.0 through as 0, as flooring would.
        if not (0 <= value < MAX_T + 1):
            return None
        t = math.floor(value)
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        # Leading zeros are allowed, but int() refuses strings of over 4300 digits.
        digits = value.lstrip("0")
        if len(digits) > len(str(MAX_T)):
            return None
        t = int(digits or "0")
    else:
        return None
    return t if 0 <= t <= MAX_T else None


def _text(value: Any) -> str:
    """A value that is not a string as stored: as orjson writes it (true, false, 39.99, [1,2])."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return orjson.dumps(value).decode()[:MAX_CHARS]


def _merge_cut_names(obj: dict[str, Any]) -> dict[str, Any]:
    """The object with its keys cut to MAX_CHARS, where keys equal after the cut are one key.

    Rule 7 makes them one property as a repeated JSON key is: it keeps the first
    one's place and the last one's value (a later null then skips it).
    """
    merged: dict[str, Any] = {}
    for name, value in obj.items():
        merged[name[:MAX_CHARS]] = value
    return merged


# A record's fields as parse_fields gives them: (kind, t, p, n, p2, properties).
Fields = tuple[str, int, str, str | None, str | None, tuple[tuple[str, str], ...]]


def _check(obj: dict[str, Any]) -> Fields | str:
    """The fields (kind, t, p, n, p2, properties) of the record a JSON object stands for,
    or why it stands for none."""
    p = obj.get("_p")
    if type(p) is str and p:  # the usual case, checked inline
        p = p[:MAX_CHARS]
    else:
        if "_p" not in obj:
            return "_p is missing"
        p = _identity(p)
        if p is None:
            return f"_p is not an identity: {_show(obj['_p'])}"

    t = obj.get("_t")
    if not (type(t) is int and 0 <= t <= MAX_T):
        if "_t" not in obj:
            return "_t is missing"
        t = _time(t)
        if t is None:
            return f"_t is not a time: {_show(obj['_t'])}"

    p2 = obj.get("_p2")
    if p2 is not None:
        p2 = _identity(p2)
        if p2 is None:
            return f"_p2 is not an identity: {_show(obj['_p2'])}"
        # The contract lists aliases as identity links only: other keys are ignored.
        return ("alias", t, p, None, p2, ())

    n = obj.get("_n")
    if n is not None:
        if type(n) is not str or not n:
            return f"_n is not an event name: {_show(n)}"
        kind = "event"
        n = n[:MAX_CHARS]
    else:
        kind = "set"

    if max(map(len, obj)) > MAX_CHARS:
        obj = _merge_cut_names(obj)
    try:
        # The hot loop of an import: one comprehension over the object's keys, in order.
        properties = tuple(
            [
                (name[:MAX_CHARS], value[:MAX_CHARS] if type(value) is str else _text(value))
                for name, value in obj.items()
                if value is not None and name not in RESERVED_KEYS
            ]
        )
    except orjson.JSONEncodeError:
        # orjson reads 1024 levels of nesting but writes only 254.
        return "a property value is nested too deeply to store as JSON"
    return (kind, t, p, n, None, properties)


_UNPARSED = object()


def parse_fields(raw: bytes) -> Fields | Rejection | None:
    """parse_line without building a Record: the tuple (kind, t, p, n, p2, properties)."""
    # Most lines are plain UTF-8 JSON: parse the bytes as they are. A line with
    # KM's octal escapes is never valid JSON (`\\303` is no JSON escape), nor is
    # one with bad UTF-8 or nothing in it, so every line that rules 1-3 change
    # is decoded first. Lines that surely hold an escape skip the attempt:
    # orjson's error costs more than its parse.
    obj: Any = _UNPARSED
    text = None
    if b"\\" not in raw or not _OCTAL.search(raw):
        try:  # noqa: SIM105 (contextlib.suppress costs more than the parse it guards)
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    if obj is _UNPARSED:
        text = decode_line(raw)
        if not text or text.isspace():
            return None
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return Rejection(f"not valid JSON: {exc}", text)
    if type(obj) is not dict:
        return Rejection("the line is not a JSON object", text or decode_line(raw))
    checked = _check(obj)
    if type(checked) is str:
        return Rejection(checked, text or decode_line(raw))
    # `type() is`, cheaper than isinstance in the hot loop, is not narrowed by mypy.
    return checked  # type: ignore[return-value]


def parse_line(raw: bytes) -> Record | Rejection | None:
    """Parse one line (without its newline): None when blank, else a Record or a Rejection."""
    parsed = parse_fields(raw)
    if isinstance(parsed, tuple):
        return Record(*parsed)
    return parsed
