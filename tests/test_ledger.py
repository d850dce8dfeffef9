"""kmdb.load.ledger: the progress of each revision and part, moved with each chunk's rows."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from kmdb.errors import KmdbError
from kmdb.load.database import create_schema
from kmdb.load.ledger import (
    Counts,
    Move,
    Part,
    error_text,
    per_part,
    progress_sql,
    revision_states,
    sum_parts,
    update_many,
)
from kmdb.load.parts import save_plans
from kmdb.transform.rows import MAX_REVISION


def test_counts_add_up_with_their_timings() -> None:
    total = Counts(lines=3, events=2, timings={"parse": 1.0})
    total.add(Counts(lines=4, properties=5, bytes=9, timings={"parse": 0.5, "load": 2.0}))
    assert (total.lines, total.events, total.properties, total.bytes) == (7, 2, 5, 9)
    assert total.timings == {"parse": 1.5, "load": 2.0}


def _move(part: int, from_line: int, to_line: int, events: int, finished: bool = False) -> Move:
    return Move(
        Part(1, part, 0, None, from_line, 0, 0),
        from_line,
        to_line,
        end_offset=to_line * 10,
        properties_done=to_line,
        counts=Counts(lines=to_line - from_line, events=events),
        finished=finished,
    )


def test_moves_of_one_part_in_a_chunk_become_one() -> None:
    # A part's last lines and its end marker come in the same chunk.
    merged = per_part([_move(0, 0, 5, 3), _move(1, 0, 2, 1), _move(0, 5, 7, 0, finished=True)])
    assert [(m.part.part, m.from_line, m.to_line, m.finished) for m in merged] == [
        (0, 0, 7, True),
        (1, 0, 2, False),
    ]
    assert (merged[0].counts.lines, merged[0].counts.events) == (7, 3)


def test_one_statement_moves_every_part_only_from_where_the_chunk_found_it(
    engine: Engine,
) -> None:
    create_schema(engine)
    save_plans(engine, [{"revision": 1, "part": p, "first_byte": 100 * p} for p in range(3)])
    with engine.begin() as conn:
        conn.execute(text("UPDATE revision_parts SET lines_done = 0, bytes_done = 0"))
    moves = [_move(0, 0, 5, 4, finished=True), _move(1, 0, 2, 1)]
    with engine.begin() as conn:
        assert conn.exec_driver_sql(progress_sql(moves)).rowcount == 2
        # Run again, from where they no longer are: nothing moves.
        assert conn.exec_driver_sql(progress_sql(moves)).rowcount == 0
        rows = conn.execute(
            text(
                "SELECT part, lines_done, bytes_done, events, status FROM revision_parts "
                "ORDER BY part"
            )
        ).all()
    # A part moved on is marked running by its first chunk; one not in the chunk stays.
    assert [tuple(r) for r in rows] == [
        (0, 5, 50, 4, "done"),
        (1, 2, 20, 1, "running"),
        (2, 0, 0, 0, "pending"),
    ]


def test_a_revisions_totals_are_its_parts_and_it_is_done_when_they_all_are(
    engine: Engine,
) -> None:
    create_schema(engine)
    revision_states(engine, [4])
    save_plans(engine, [{"revision": 4, "part": p, "first_byte": 0} for p in range(2)])
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE revision_parts SET start_line = 1 + 10 * part, start_byte = 100 * part, "
                "lines_done = 10 * part + 10, bytes_done = 100 * part + 100, events = 3, "
                "status = CASE WHEN part = 0 THEN 'done' ELSE 'running' END"
            )
        )
    sum_parts(engine, 4)
    state = revision_states(engine, [4])[4]
    assert (state["lines_done"], state["bytes_done"], state["events"]) == (20, 200, 6)
    assert state["status"] == "pending"
    with engine.begin() as conn:
        conn.execute(text("UPDATE revision_parts SET status = 'done'"))
    sum_parts(engine, 4, 4)
    assert revision_states(engine, [4])[4]["status"] == "done"
    sum_parts(engine)  # no revisions: nothing to do


def test_revision_states_are_made_once_and_refuse_numbers_beyond_the_ids(
    engine: Engine,
) -> None:
    create_schema(engine)
    first = revision_states(engine, [1, 2], sizes={1: 300})
    assert {n: (s["status"], s["size"]) for n, s in first.items()} == {
        1: ("pending", 300),
        2: ("pending", None),
    }
    assert revision_states(engine, [1], sizes={1: 999})[1]["size"] == 300
    with pytest.raises(KmdbError, match=f"Revision {MAX_REVISION + 1} is beyond the largest"):
        revision_states(engine, [MAX_REVISION + 1])


def test_one_update_gives_each_row_its_own_values_under_its_own_condition() -> None:
    sql = update_many("t", ["id = 1", "id = 2"], {"a": [10, "a + 1"]}, ["b = 0", "b = 5"])
    assert sql == (
        "UPDATE t SET a = CASE WHEN id = 1 THEN 10 WHEN id = 2 THEN a + 1 END "
        "WHERE (id = 1 AND b = 0) OR (id = 2 AND b = 5)"
    )


def test_an_error_is_stored_with_its_class_and_cut_to_fit() -> None:
    assert error_text(ValueError("bad")) == "ValueError: bad"
    assert len(error_text(ValueError("x" * 5000))) == 2000
