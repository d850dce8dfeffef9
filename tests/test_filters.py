"""kmdb.transform.filters: ignored users, whitelisted events and blacklisted properties applied
to a record (pure). Reading them from their tables: tests/test_filter_tables.py."""

from __future__ import annotations

from kmdb.transform.filters import Filters
from kmdb.transform.parse import Record

EVENT = Record("event", 10, "bob", "paid", None, (("plan", "gold"), ("url", "/buy")))
SET = Record("set", 11, "bob", None, None, (("plan", "gold"),))
ALIAS = Record("alias", 12, "anon", None, "bob", ())


def test_no_filters_keep_every_record_as_it_is() -> None:
    none = Filters()
    assert not none.active
    assert [none.keep(r) for r in (EVENT, SET, ALIAS)] == [EVENT, SET, ALIAS]


def test_an_ignored_user_drops_its_lines_and_its_aliases_from_either_side() -> None:
    filters = Filters(ignored_users=frozenset({"bob"}))
    assert filters.active
    assert [filters.keep(r) for r in (EVENT, SET, ALIAS)] == [None, None, None]
    assert filters.keep(EVENT._replace(p="alice")) == EVENT._replace(p="alice")


def test_a_whitelist_keeps_only_its_events_and_leaves_sets_and_aliases_alone() -> None:
    filters = Filters(whitelisted_events=frozenset({"signed up"}))
    assert filters.keep(EVENT) is None
    assert filters.keep(EVENT._replace(n="signed up")) == EVENT._replace(n="signed up")
    assert filters.keep(SET) == SET and filters.keep(ALIAS) == ALIAS


def test_a_blacklist_drops_those_properties_and_keeps_the_record() -> None:
    filters = Filters(blacklisted_properties=frozenset({"url"}))
    assert filters.keep(EVENT) == EVENT._replace(properties=(("plan", "gold"),))
    assert filters.keep(SET) is SET  # nothing to drop: the same record
    emptied = Filters(blacklisted_properties=frozenset({"plan"})).keep(SET)
    assert emptied == SET._replace(properties=())  # a set with no property left stays a set
