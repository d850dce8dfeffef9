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
_ESCAPES = re.compile(rb"\\\\|(?:\\[23][0-7][0-7])+")

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


def _decode_run(match: re.Match[bytes]) -> bytes:
    escapes = match.group()
    if escapes == b"\\\\":
        return escapes
    run = bytes(int(escapes[i + 1 : i + 4], 8) for i in range(0, len(escapes), 4))
    return run.decode("utf-8", _ERRORS).encode("utf-8")


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


def _check(obj: dict[str, Any]) -> tuple | str:
    """The fields (kind, t, p, n, p2, properties) of the record a JSON object stands for,
    or why it stands for none."""
    if "_p" not in obj:
        return "_p is missing"
    p = _identity(obj["_p"])
    if p is None:
        return f"_p is not an identity: {_show(obj['_p'])}"

    if "_t" not in obj:
        return "_t is missing"
    t = _time(obj["_t"])
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

    # The hot loop of an import: plain tuples, the common value types first. A string
    # is stored as it is; anything else as orjson writes it.
    properties = []
    add = properties.append
    try:
        for name, value in obj.items():
            if value is None or name in RESERVED_KEYS:
                continue
            if type(value) is str:
                add((name[:MAX_CHARS], value[:MAX_CHARS]))
            elif value is True:
                add((name[:MAX_CHARS], "true"))
            elif value is False:
                add((name[:MAX_CHARS], "false"))
            else:
                add((name[:MAX_CHARS], orjson.dumps(value).decode()[:MAX_CHARS]))
    except orjson.JSONEncodeError:
        # orjson reads 1024 levels of nesting but writes only 254.
        return "a property value is nested too deeply to store as JSON"
    return (kind, t, p, n, None, tuple(properties))


def parse_fields(raw: bytes) -> tuple | Rejection | None:
    """parse_line without building a Record: the tuple (kind, t, p, n, p2, properties)."""
    try:
        # Most lines are plain UTF-8 JSON: parse the bytes as they are. A line
        # with KM's octal escapes is never valid JSON (`\303` is no JSON escape),
        # nor is one with bad UTF-8 or nothing in it, so every line that rules
        # 1-3 change lands below and is decoded first.
        obj = orjson.loads(raw)
        text = None
    except orjson.JSONDecodeError:
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
    return checked


def parse_line(raw: bytes) -> Record | Rejection | None:
    """Parse one line (without its newline): None when blank, else a Record or a Rejection."""
    parsed = parse_fields(raw)
    if type(parsed) is tuple:
        return Record(*parsed)
    return parsed
