"""Alias rules and canonical identities (pure: no I/O, no database).

Aliases link identities into people transitively; each person's canonical
identity is its numeric identity of lowest value (ties by text), else its
lowest identity in code-point order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from kmdb.transform.parse import is_numeric

T = TypeVar("T")


def alias_pair(p: str, p2: str) -> tuple[str, str] | None:
    """The (name1, name2) an alias line stores, or None when the contract ignores it.

    An alias of an identity to itself, or between two numeric identities (two
    real accounts), is ignored. name1 is the numeric one if there is one,
    otherwise the lower of the two in code-point order.
    """
    if p == p2:
        return None
    numeric_p, numeric_p2 = is_numeric(p), is_numeric(p2)
    if numeric_p and numeric_p2:
        return None
    if numeric_p2 or (not numeric_p and p2 < p):
        return p2, p
    return p, p2


def canonical_key(identity: str) -> tuple[int, int, str]:
    """Sort key: numeric identities first by value then text, then the rest by code point."""
    if is_numeric(identity):
        return (0, int(identity), identity)
    return (1, 0, identity)


def people(pairs: Iterable[tuple[T, T]], key: Callable[[Any], Any] = canonical_key) -> dict[T, T]:
    """Map every identity that appears in an alias to its person's canonical identity.

    Identities are names, or anything else (user ids) with a key that sorts them
    as canonical_key sorts their names.
    """
    parent: dict[T, T] = {}

    def root(x: T) -> T:
        parent.setdefault(x, x)
        top = x
        while parent[top] != top:
            top = parent[top]
        while parent[x] != top:  # path compression keeps later look-ups short
            parent[x], x = top, parent[x]
        return top

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            # Keep the better canonical as the root, so the root is the answer.
            if key(rb) < key(ra):
                ra, rb = rb, ra
            parent[rb] = ra
    # Compressed in place: one dict, however many people (a first import can hold millions).
    for x in parent:
        parent[x] = root(x)
    return parent
