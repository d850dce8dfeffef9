"""kmdb.transform.identity: the alias rules and canonical identities."""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine

from kmdb.settings import Settings
from kmdb.transform.identity import alias_pair, canonical_key, people
from tests.helpers import line, run_import, write_export
from tests.model import dump


def test_alias_rules(engine: Engine, settings: Settings, tmp_path: Path) -> None:
    folder = write_export(
        tmp_path / "export",
        {
            1: [
                line(_p="12", _p2="34", _t=10),  # two accounts: ignored
                line(_p="a", _p2="a", _t=11),  # itself: ignored
                line(_p="b", _p2="a", _t=50),  # stored as (a, b)
                line(_p="a", _p2="b", _t=20),  # same pair, earlier
                line(_p="x", _p2=7, _t=30),  # numeric first
                line(_p="007", _p2="x", _t=31),  # 007 and 7 tie by value: lower text wins
                line(_n="e", _p="x", _t=40),
                line(_n="e", _p="12", _t=41),
                line(_n="e", _p="34", _t=42),
                line(_n="e", _p="b", _t=43),
            ]
        },
    )
    run_import(engine, folder, settings)
    result = dump(engine)
    assert result.aliases == {
        ("a", "b", "1970-01-01 00:00:20"),
        ("7", "x", "1970-01-01 00:00:30"),
        ("007", "x", "1970-01-01 00:00:31"),
    }
    assert sorted(e[2] for e in result.events) == ["007", "12", "34", "a"]


# --- The rules alone (pure) ----------------------------------------------------------


def test_an_alias_is_stored_with_the_account_or_the_lower_name_first() -> None:
    assert alias_pair("anon", "42") == ("42", "anon")  # the numeric one first
    assert alias_pair("42", "anon") == ("42", "anon")
    assert alias_pair("zed", "bob") == ("bob", "zed")  # else the lower in code points
    assert alias_pair("Bob", "bob") == ("Bob", "bob")
    assert alias_pair("a", "a") is None  # itself
    assert alias_pair("12", "034") is None  # two accounts


def test_canonical_identities_are_accounts_by_value_then_names_by_code_point() -> None:
    names = ["zed", "7", "007", "Bob", "é", "10", "bob"]
    assert sorted(names, key=canonical_key) == ["007", "7", "10", "Bob", "bob", "zed", "é"]


def test_people_are_linked_transitively_to_their_best_identity() -> None:
    pairs = [("anon-1", "bob@x"), ("bob@x", "anon-2"), ("42", "anon-2"), ("solo", "other")]
    assert people(pairs) == {
        "anon-1": "42",
        "bob@x": "42",
        "anon-2": "42",
        "42": "42",
        "solo": "other",
        "other": "other",
    }


IDENTITY = st.sampled_from(["1", "2", "07", "7", "a", "b", "B", "b ", "é", "zz"])


@given(st.lists(st.tuples(IDENTITY, IDENTITY), max_size=30), st.randoms())
def test_any_order_of_the_same_aliases_gives_the_same_people(
    pairs: list[tuple[str, str]], rng: random.Random
) -> None:
    shuffled = [(b, a) if rng.random() < 0.5 else (a, b) for a, b in pairs]
    rng.shuffle(shuffled)
    got = people(pairs)
    assert people(shuffled) == got
    # Each person's canonical identity is its best member, and names itself.
    for member, canonical in got.items():
        assert got[canonical] == canonical
        assert canonical_key(canonical) <= canonical_key(member)


def test_people_work_on_ids_with_a_key_of_their_own() -> None:
    names = {1: "bob", 2: "42", 3: "anon"}
    got = people([(1, 3), (3, 2)], key=lambda i: canonical_key(names[i]))
    assert got == {1: 2, 2: 2, 3: 2}
