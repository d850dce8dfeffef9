"""How kmdb-import groups small revision files into shared jobs (pure: no services)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kmdb.schedule import groups

BUDGET = 1000


def test_small_files_make_groups_alike_in_size_with_none_left_over() -> None:
    # Thirty files of about a third of the budget, not quite alike: filling each group
    # up to the budget in turn made twelve groups, pairs among triples, one short.
    sizes = [400, 350, 300, 300, 300, 300] * 5
    got = groups(list(range(1, 31)), sizes, BUDGET)
    assert len(got) == 10
    assert [unit for group in got for unit in group] == list(range(1, 31))
    totals = [sum(sizes[unit - 1] for unit in group) for group in got]
    assert max(totals) - min(totals) <= 400


def test_big_files_and_files_of_unknown_size_go_alone() -> None:
    assert groups([1, 2, 3, 4, 5, 6], [10, 20, None, 30, BUDGET, 40], BUDGET) == [
        [1, 2],
        [3],
        [4],
        [5],
        [6],
    ]
    assert groups([7, 8], [0, 0], BUDGET) == [[7, 8]]
    assert groups([], [], BUDGET) == []


sizes_strategy = st.lists(
    st.one_of(st.none(), st.integers(min_value=0, max_value=2 * BUDGET)), max_size=60
)


@given(sizes_strategy)
def test_groups_keep_order_and_cut_runs_into_equal_shares(sizes: list[int | None]) -> None:
    units = list(range(len(sizes)))
    got = groups(units, sizes, BUDGET)
    assert [unit for group in got for unit in group] == units
    assert all(group for group in got)
    size = dict(zip(units, sizes, strict=True))
    alone = {u for u in units if size[u] is None or size[u] >= BUDGET}
    for group in got:
        if any(u in alone for u in group):
            assert len(group) == 1
    # Each run of small files between lone ones: the fewest groups at BUDGET bytes each,
    # and no group differs from another by more than two of its files.
    runs: list[list[list[int]]] = [[]]
    for group in got:
        if group[0] in alone:
            runs.append([])
        else:
            runs[-1].append(group)
    for run in runs:
        totals = [sum(size[u] or 0 for u in group) for group in run]
        biggest = max((size[u] or 0 for group in run for u in group), default=0)
        if not run or sum(totals) == 0:
            assert len(run) <= 1
            continue
        assert len(run) == -(-sum(totals) // BUDGET)
        assert max(totals) - min(totals) <= 2 * biggest
        assert max(totals) < 2 * BUDGET
