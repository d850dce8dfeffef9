"""kmdb.pipeline.import_pass: the second pass, a job's parts imported chunk by chunk, resumable, against the model."""

from __future__ import annotations

import gc
import threading
import weakref
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from kmdb.errors import Unreadable
from kmdb.extract.local import LocalSource
from kmdb.load.database import create_schema
from kmdb.load.ledger import Counts
from kmdb.load.settle import settle
from kmdb.pipeline import import_pass
from kmdb.pipeline.discovery import new_revisions
from kmdb.pipeline.import_pass import import_parts, import_revision
from kmdb.pipeline.inline import summary
from kmdb.pipeline.scan_pass import scan_revision, scan_revisions
from kmdb.sample import write_sample
from kmdb.settings import Settings
from tests.helpers import (
    Interrupted,
    chunked_source,
    line,
    lock_waits,
    one_alias_on_mariadb,
    run_import,
    wait_for,
    write_export,
)
from tests.model import assert_same, dump, expected, read_export


def test_rejected_lines_are_recorded_and_the_rest_goes_on(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = write_export(
        tmp_path / "export",
        {
            3: [
                line(_n="ok", _p="a", _t=1),
                b'{"_n":"viewed","_p":"x","_t":13511',
                b"",
                line(_n="ok", _p="a", _t="yesterday"),
                line(_n="ok", _p="b", _t=2),
            ]
        },
    )
    run_import(engine, folder, settings)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT revision, line, reason, text FROM rejected_lines ORDER BY line")
        ).all()
    assert [(r[0], r[1]) for r in rows] == [(3, 2), (3, 4)]
    assert rows[0][2].startswith("not valid JSON")
    assert rows[0][3] == '{"_n":"viewed","_p":"x","_t":13511'
    assert "_t is not a time" in rows[1][2]
    assert len(dump(engine).events) == 2
    assert summary(engine).rejected == 2


def test_an_interrupted_import_resumes_exactly(
    engine: Engine, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 4_000, seed=11, lines_per_revision=4_000)
    # Streamed, not read ahead whole: the reads then stop between commits.
    monkeypatch.setattr("kmdb.extract.read_ahead.READ_AHEAD_SPAN", 0)
    settings = settings.replace(batch_size=97)
    create_schema(engine)
    with pytest.raises(Interrupted):  # in the alias scan
        scan_revision(engine, chunked_source(folder, 4096, fail_after=50), 1, settings)
    scan_revision(engine, LocalSource(str(folder)), 1, settings)
    for fail_after in (3, 20, 30):
        with pytest.raises(Interrupted):
            import_revision(engine, chunked_source(folder, 4096, fail_after), 1, settings)
    with engine.connect() as conn:
        status = conn.execute(text("SELECT status, lines_done FROM revisions")).one()
    assert status[0] == "failed" and 0 < status[1] < 4_000
    run_import(engine, folder, settings)
    assert_same(dump(engine), expected(read_export(folder)))


# --- Any order and any split of the same lines gives the same rows --------------------


def _check_part_plans(engine: Engine, folder: Path) -> int:
    """Every revision's parts tile its file: contiguous bytes, consecutive lines, all done."""
    with engine.connect() as conn:
        parts = conn.execute(
            text(
                "SELECT revision, part, start_byte, end_byte, start_line, lines_done, bytes_done, "
                "status FROM revision_parts ORDER BY revision, part"
            )
        ).all()
        revisions = {
            row[0]: row[1:]
            for row in conn.execute(
                text("SELECT number, lines_done, bytes_done, status FROM revisions")
            )
        }
    by_revision: dict[int, list] = {}
    for row in parts:
        by_revision.setdefault(row[0], []).append(row)
    for revision, rows in by_revision.items():
        data = (folder / "revisions" / f"{revision}.json").read_bytes()
        lines = len(data.split(b"\n")) - (1 if data.endswith(b"\n") or not data else 0)
        assert rows[0][2] == 0 and rows[0][4] == 1
        for before, after in zip(rows, rows[1:], strict=False):
            assert before[3] == after[2]  # this part ends where the next one starts
            assert before[5] == after[4] - 1  # and its last line is the one before
        assert rows[-1][3] == len(data)
        assert all(row[6] == row[3] and row[7] == "done" for row in rows)
        assert revisions[revision] == (lines, len(data), "done")
    return len(parts)


def test_revisions_in_parts_give_the_same_rows(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 3_000, seed=4, lines_per_revision=1_000, bad_every=40)
    settings = settings.replace(part_size=4_000, batch_size=70)
    # Chunks far smaller than the parts: lines cross chunks and parts alike.
    source = chunked_source(folder, 512)
    create_schema(engine)
    # Interrupted in its first part, revision 1 goes on from there in the full run.
    with pytest.raises(Interrupted):
        import_revision(engine, chunked_source(folder, 512, fail_after=1), 1, settings)
    run_import(engine, folder, settings, source)
    wanted = expected(read_export(folder))
    assert_same(dump(engine), wanted)
    assert len(wanted.rejected) > 20
    assert _check_part_plans(engine, folder) > 3 * 10
    # Property ids count from their part's offset, on SQLite as on MySQL: none repeats.
    with engine.connect() as conn:
        total, distinct = conn.execute(
            text("SELECT COUNT(*), COUNT(DISTINCT id) FROM properties")
        ).one()
    assert total == distinct > 1_000
    assert new_revisions(engine, source, settings) == []


def test_parts_handle_long_lines_empty_files_and_no_last_newline(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    body = [line(_n=f"e{i}", _p=f"u{i % 7}", _t=i) for i in range(40)]
    body[10] = line(_n="long", _p="a", _t=5, blob="x" * 5_000)  # spans several parts
    body[25] = b"{not json"
    (folder / "revisions").mkdir(parents=True)
    (folder / "revisions" / "1.json").write_bytes(b"\n".join(body))  # no newline at the end
    (folder / "revisions" / "2.json").write_bytes(b"")
    (folder / "revisions" / "3.json").write_bytes(line(_n="only", _p="b", _t=1) + b"\n")
    settings = settings.replace(part_size=700, batch_size=3)
    run_import(engine, folder, settings)
    assert_same(dump(engine), expected(read_export(folder)))
    assert dump(engine).rejected == {(1, 26)}
    assert _check_part_plans(engine, folder) > 8


def _part_statuses(engine: Engine) -> dict[int, str]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT revision, status FROM revision_parts")).all())


def test_small_files_share_chunks_and_a_missing_one_does_not_stop_the_others(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 2_000, seed=6, lines_per_revision=400)
    settings = settings.replace(batch_size=1_000)
    source = LocalSource(str(folder))
    create_schema(engine)
    parts = [(n, 0) for n in range(1, 6)]
    scan_revisions(engine, source, [n for n, _ in parts], settings)
    settle(engine, before_import=True)
    (folder / "revisions" / "3.json").rename(tmp_path / "3.json")
    chunks: list[int] = []
    with pytest.raises(Unreadable, match=r"1 of 5 parts could not be read: revision 3"):
        import_parts(engine, source, parts, settings, on_chunk=lambda c: chunks.append(c.lines))
    assert _part_statuses(engine) == {1: "done", 2: "done", 3: "failed", 4: "done", 5: "done"}
    # Four files of 400 lines went in, in chunks that span files.
    assert sum(chunks) == 1_600 and max(chunks) > 400
    (tmp_path / "3.json").rename(folder / "revisions" / "3.json")
    import_parts(engine, source, parts, settings)
    settle(engine)
    assert_same(dump(engine), expected(read_export(folder)))


def test_a_job_that_fails_leaves_the_files_it_did_not_reach_pending(
    engine: Engine, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 1_200, seed=7, lines_per_revision=400)
    monkeypatch.setattr(
        "kmdb.extract.read_ahead.READ_AHEAD_SPAN", 0
    )  # streamed: the failure comes in order
    settings = settings.replace(batch_size=100)
    create_schema(engine)
    scan_revisions(engine, LocalSource(str(folder)), [1, 2, 3], settings)

    class BrokenSecond(LocalSource):
        def chunks(self, revision: int, offset: int = 0, end: int | None = None):
            if revision == 2:
                raise Interrupted("the disk went away")
            yield from super().chunks(revision, offset, end)

    with pytest.raises(Interrupted):
        import_parts(engine, BrokenSecond(str(folder)), [(1, 0), (2, 0), (3, 0)], settings)
    assert _part_statuses(engine) == {1: "done", 2: "failed", 3: "pending"}
    with engine.connect() as conn:
        revisions = dict(conn.execute(text("SELECT number, status FROM revisions")).all())
    assert revisions == {1: "done", 2: "failed", 3: "pending"}
    run_import(engine, folder, settings)
    assert_same(dump(engine), expected(read_export(folder)))


def test_an_import_that_scans_first_holds_its_first_lock_meanwhile(
    mysql_url: str, tmp_path: Path
) -> None:
    # An import job scans a revision its scan job did not (one that failed, say); on a
    # big file that takes long, and with its first lock free meanwhile it looked dead.
    from kmdb.load.locks import is_held, part_lock
    from kmdb.load.parts import plan_parts

    engine, settings, source = one_alias_on_mariadb(mysql_url, tmp_path, 4)
    [part] = plan_parts(engine, source, 4, settings)
    lock = part_lock(4, part["part"])
    counts: list[Counts] = []
    job = threading.Thread(
        target=lambda: counts.append(import_parts(engine, source, [(4, part["part"])], settings))
    )
    # Its scan writes the alias line's sighting: held up there, the import is scanning.
    with engine.connect() as blocker, blocker.begin():
        blocker.execute(text("SELECT line FROM alias_sightings FOR UPDATE"))
        job.start()
        wait_for(lambda: lock_waits(engine) == 1, timeout=60, what="the scan to wait")
        assert is_held(engine, lock) is True
    job.join(timeout=60)
    assert [c.events for c in counts] == [1]
    assert is_held(engine, lock) is False
    engine.dispose()


class _Cycle:
    """An object in a reference cycle: only the cycle collector frees it."""

    def __init__(self, freed: list[int], number: int) -> None:
        self.me = self
        weakref.finalize(self, freed.append, number)


def test_the_cycle_collector_is_off_between_chunks_and_run_every_few_chunks(
    engine: Engine, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "export"
    write_sample(folder, 3_000, seed=8, lines_per_revision=3_000)
    settings = settings.replace(batch_size=100)
    monkeypatch.setattr(import_pass, "COLLECT_EVERY", 4)
    create_schema(engine)
    source = LocalSource(str(folder))
    scan_revision(engine, source, 1, settings)
    settle(engine, before_import=True)
    enabled: list[bool] = []
    freed: list[int] = []
    late: list[int] = []  # cycles still there more than two rounds of collection after
    made = 0

    def on_chunk(_counts: object) -> None:
        nonlocal made
        enabled.append(gc.isenabled())
        late.extend(n for n in range(made - 2 * import_pass.COLLECT_EVERY) if n not in freed)
        _Cycle(freed, made)
        made += 1

    assert gc.isenabled()
    import_revision(engine, source, 1, settings, on_chunk)
    assert gc.isenabled()  # on again once the import is done
    assert made > 12 and not any(enabled)
    # Cycles made while it was off were collected along the way, a few chunks later.
    assert not late
