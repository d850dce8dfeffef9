"""How kmdb-import groups small revision files into shared jobs (pure: no services)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kmdb.parts import part_plan
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


def test_jobs_come_in_multiples_of_the_pools_workers() -> None:
    # Three groups' worth of small files for two workers: four groups, not three.
    assert [len(g) for g in groups(list(range(10)), [300] * 10, BUDGET)] == [3, 4, 3]
    assert [len(g) for g in groups(list(range(10)), [300] * 10, BUDGET, share=2)] == [2, 3, 2, 3]
    assert groups([1, 2], [100, 100], BUDGET, share=2) == [[1, 2]]  # one job needs no partner
    # A big file in five parts' worth: six parts of the same size.
    plan = part_plan(7, 5_000, 1_000, share=2)
    assert [p["first_byte"] for p in plan] == [0, 833, 1666, 2500, 3333, 4166]
    assert len(part_plan(7, 5_000, 1_000)) == 5
    assert len(part_plan(7, 1_000, 1_000, share=2)) == 1


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


@given(sizes_strategy, st.integers(min_value=1, max_value=3))
def test_groups_keep_order_and_cut_runs_into_equal_shares(
    sizes: list[int | None], share: int
) -> None:
    units = list(range(len(sizes)))
    got = groups(units, sizes, BUDGET, share)
    assert [unit for group in got for unit in group] == units
    assert all(group for group in got)
    size = dict(zip(units, sizes, strict=True))
    alone = {u for u in units if size[u] is None or size[u] >= BUDGET}
    for group in got:
        if any(u in alone for u in group):
            assert len(group) == 1
    # Each run of small files between lone ones: the fewest groups at BUDGET bytes each
    # (made up to a multiple of share), and no group differs from another by more
    # than two of its files.
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
        fewest = -(-sum(totals) // BUDGET)
        if share == 1 or fewest == 1:
            assert len(run) == fewest
        else:  # shares of a multiple of share; one may be left empty by a file wider than it
            assert fewest <= len(run) <= -(-fewest // share) * share
        assert max(totals) - min(totals) <= 2 * biggest
        assert max(totals) < 2 * BUDGET
