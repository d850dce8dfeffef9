"""kmdb.retry: what is tried again, with which pauses, and when it gives up."""

from __future__ import annotations

import pytest

from kmdb.errors import DatabaseUnavailable, RedisUnavailable, is_transient
from kmdb.retry import LOCK_CONFLICT, OUTAGE, Backoff, retrying


class Failing:
    """An action that fails `times` times with exc, then returns "done"."""

    def __init__(self, exc: Exception, times: int) -> None:
        self.exc = exc
        self.times = times
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.times:
            raise self.exc
        return "done"


def test_a_transient_failure_is_tried_again_after_each_pause_in_turn() -> None:
    paused: list[float] = []
    action = Failing(DatabaseUnavailable("down"), 7)
    assert retrying(action, is_transient, OUTAGE, budget=lambda: 1000, wait=paused.append) == "done"
    assert action.calls == 8
    assert paused == [2, 5, 15, 30, 60, 120, 120]  # the last pause is repeated


def test_the_budget_bounds_the_pauses_and_the_last_failure_is_raised() -> None:
    paused: list[float] = []
    action = Failing(DatabaseUnavailable("down"), 100)
    with pytest.raises(DatabaseUnavailable, match="down"):
        retrying(action, is_transient, OUTAGE, budget=lambda: 30, wait=paused.append)
    assert paused == [2, 5, 15, 8]  # the last one cut to what the budget leaves
    assert action.calls == 5


def test_no_budget_no_retry() -> None:
    action = Failing(DatabaseUnavailable("down"), 1)
    with pytest.raises(DatabaseUnavailable):
        retrying(action, is_transient, OUTAGE, budget=lambda: 0, wait=lambda _: None)
    assert action.calls == 1


def test_a_failure_not_worth_it_is_raised_at_once() -> None:
    action = Failing(ValueError("bad"), 1)
    with pytest.raises(ValueError, match="bad"):
        retrying(action, is_transient, OUTAGE, budget=lambda: 1000, wait=lambda _: None)
    assert action.calls == 1


def test_lock_conflicts_are_tried_eight_times_in_all() -> None:
    paused: list[float] = []
    action = Failing(DatabaseUnavailable("deadlock"), 100)
    with pytest.raises(DatabaseUnavailable):
        retrying(action, is_transient, LOCK_CONFLICT, wait=paused.append)
    assert action.calls == 8
    assert paused == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0]


def test_giving_up_can_raise_a_sentence_of_its_own() -> None:
    def give_up(exc: BaseException, budget: float) -> RedisUnavailable:
        return RedisUnavailable(f"Redis did not answer for {budget:.0f} s ({exc}).", "testing")

    with pytest.raises(RedisUnavailable, match=r"did not answer for 3 s \(refused\)") as caught:
        retrying(
            Failing(ConnectionRefusedError("refused"), 100),
            is_transient,
            Backoff((1,)),
            budget=lambda: 3,
            wait=lambda _: None,
            give_up=give_up,
        )
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_the_budget_is_read_only_once_a_failure_comes() -> None:
    asked: list[int] = []

    def budget() -> float:
        asked.append(1)
        return 10

    assert retrying(lambda: "done", is_transient, OUTAGE, budget=budget) == "done"
    assert asked == []
