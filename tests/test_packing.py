"""kmdb.orchestrate.packing: how kmdb-import groups small revision files into shared jobs (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kmdb.orchestrate.packing import groups

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
    assert [len(g) for g in groups(list(range(10)), [300] * 10, BUDGET, multiple=2)] == [2, 3, 2, 3]
    assert groups([1, 2], [100, 100], BUDGET, multiple=2) == [[1, 2]]  # one job needs no partner


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
    sizes: list[int | None], multiple: int
) -> None:
    units = list(range(len(sizes)))
    got = groups(units, sizes, BUDGET, multiple)
    assert [unit for group in got for unit in group] == units
    assert all(group for group in got)
    size = dict(zip(units, sizes, strict=True))
    alone = {u for u in units if size[u] is None or size[u] >= BUDGET}
    for group in got:
        if any(u in alone for u in group):
            assert len(group) == 1
    # Each run of small files between lone ones: at most the fewest shares at BUDGET
    # bytes each (made up to a multiple of `multiple`), and no group differs from
    # another by more than two of its files.
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
        # Groups of at most BUDGET bytes each need this many at least ...
        fewest = -(-sum(totals) // BUDGET)
        # ... and a pool of `multiple` workers may make it up to fewer than `multiple` more.
        # A file whose middle byte falls past a share's end can leave that share
        # empty (sizes 1, 998, 998, 120 make two groups, not three): no group
        # holds twice the budget, though.
        assert -(-sum(totals) // (2 * BUDGET)) <= len(run) < fewest + multiple
        assert max(totals) - min(totals) <= 2 * biggest
        assert max(totals) < 2 * BUDGET


small_sizes = st.lists(st.integers(min_value=0, max_value=BUDGET // 10), min_size=1, max_size=80)


@given(small_sizes, st.integers(min_value=1, max_value=3))
def test_files_small_beside_their_groups_fill_a_multiple_of_the_pools_workers(
    sizes: list[int], multiple: int
) -> None:
    # Each group then holds some file's middle byte: none is left empty, and the
    # groups come one alone or in a multiple of the pool's workers.
    got = groups(list(range(len(sizes))), list(sizes), BUDGET, multiple)
    assert len(got) == 1 or len(got) % multiple == 0
    if sum(sizes) > BUDGET:
        assert len(got) >= 2


def test_a_file_wider_than_a_share_can_leave_it_empty() -> None:
    # Found by the property above: three shares of 706 bytes, the middle bytes of
    # the files fall in the first and the third.
    assert groups([0, 1, 2, 3], [1, 998, 998, 120], BUDGET) == [[0, 1], [2, 3]]
