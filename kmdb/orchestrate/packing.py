"""Packing units of work (revisions, parts) into jobs of about one size (pure)."""

from __future__ import annotations

from typing import TypeVar

from kmdb.load.parts import in_multiples

T = TypeVar("T")  # a unit: a revision, or a (revision, part) pair


def groups(
    units: list[T], sizes: list[int | None], budget: int, multiple: int = 1
) -> list[list[T]]:
    """Consecutive units in groups of about budget bytes; a unit of unknown or larger size alone.

    Small revision files share a job (and its chunks and transactions): a job per
    small file spends more time in its own overhead than in importing. A run of
    small files is cut into as many groups as its size needs at budget bytes
    each, all alike in size (a group may pass budget by less than one of its
    files), so that no short job is left over and workers finish together; more
    than one group come in a multiple of `multiple` (the pool's workers), where
    the run has files enough.
    """
    grouped: list[list[T]] = []
    run: list[tuple[T, int]] = []
    for unit, size in zip(units, sizes, strict=True):
        if size is None or size >= budget:
            grouped += _alike(run, budget, multiple)
            run = []
            grouped.append([unit])
        else:
            run.append((unit, size))
    return grouped + _alike(run, budget, multiple)


def _alike(run: list[tuple[T, int]], budget: int, multiple: int) -> list[list[T]]:
    """(unit, size) pairs in consecutive groups of equal shares: a unit goes to the share
    in which its middle byte falls."""
    total = sum(size for _, size in run)
    count = in_multiples(-(-total // budget), multiple)
    if not count:
        return [[unit for unit, _ in run]] if run else []  # empty files: one job for all
    share = total / count
    cut: list[list[T]] = [[] for _ in range(count)]
    before = 0
    for unit, size in run:
        cut[min(count - 1, int((before + size / 2) // share))].append(unit)
        before += size
    return [group for group in cut if group]
